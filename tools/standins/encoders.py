"""Text encoders as ComfyUI's own classes define them (fixed sizes: ComfyUI builds them from
built-in configs, so the files are full size with random values).

CLIP-L / CLIP-G are stored fp16. T5-XXL, Qwen3-4B and Qwen2.5-VL-7B are stored the way
Comfy-Org's ``*_fp8_scaled`` files are: every Linear weight float8_e4m3fn with a per-tensor
``scale_weight`` and a ``scaled_fp8`` marker, embeddings and norms bf16, so ComfyUI keeps them in
fp8 in memory (≈1 byte per parameter) and casts per layer on the CPU.
"""

from __future__ import annotations

import torch

from standins.weights import linear_weight_keys, quantize, specs_from_state_dict


def _maker(kind):
    """The ComfyUI class for `kind`, imported only when needed (older ComfyUIs lack some modules)."""
    import importlib

    def te(module, attr, **kw):
        return lambda: getattr(importlib.import_module(module).te(**kw)(device="meta", dtype=torch.bfloat16), attr)

    makers = {
        "clip_l": lambda: importlib.import_module("comfy.sd1_clip").SDClipModel(device="meta"),
        "t5xxl": lambda: importlib.import_module("comfy.text_encoders.sd3_clip").T5XXLModel(
            device="meta", dtype=torch.bfloat16),
        "qwen3_4b": te("comfy.text_encoders.z_image", "qwen3_4b"),
        "qwen25_7b": te("comfy.text_encoders.qwen_image", "qwen25_7b"),
        "sdxl_clips": lambda: importlib.import_module("comfy.sdxl_clip").SDXLClipModel(device="meta",
                                                                                        dtype=torch.float16),
        "sd3_clips": lambda: importlib.import_module("comfy.text_encoders.sd3_clip").sd3_clip(
            clip_l=True, clip_g=True, t5=False)(device="meta", dtype=torch.float16),
    }
    return makers[kind]


def _build(kind):
    with torch.device("meta"):
        return _maker(kind)()


def text_encoder_file_specs(kind):
    """Keys of a single text-encoder file (CLIPLoader / DualCLIPLoader): the `transformer`
    submodule's state dict, which is what ComfyUI's SDClipModel.load_sd loads it into."""
    model = _build(kind).transformer
    state = model.state_dict()
    if kind == "clip_l":
        return specs_from_state_dict(state, torch.float16)
    specs = specs_from_state_dict(state, torch.bfloat16)
    return quantize(specs, linear_weight_keys(model))


def checkpoint_clip_state(kind):
    """The combined text-encoder state dict (as ComfyUI's CLIP.get_sd returns it, meta tensors)
    for a checkpoint family, to be turned into checkpoint keys by its `*_for_saving` function."""
    state = _build(kind).state_dict()
    return {k: v for k, v in state.items() if ".transformer." in k}
