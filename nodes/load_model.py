"""PiD Load Model: a decoder file (+ optional download) and the Gemma-2-2B prompt encoder."""

from __future__ import annotations

import os

from ..pid_core.decoding.compile import COMPILE_CHOICES
from ..pid_core.decoding.decoder import load_decoder
from ..pid_core.errors import CheckpointReadError
from ..pid_core.files.loading import dtype_name
from ..pid_core.files.model_files import REPACK_REPO, lookup
from ..pid_core.network.config import HF_REPO, WEIGHTS_LICENSE
from . import host, model_folders, node_base, quant_host
from .download import OFF, ensure_release, release_choices
from .pid_types import PID_MODEL, PiDModel
from .text_encode import load_text_encoder

NO_FILES = "(no PiD file found - see tooltip)"
NONE = "none"
DTYPES = ["auto", "bf16", "fp16", "fp32"]


class PiDLoadModel:
    DESCRIPTION = (
        "Loads an NVIDIA PiD pixel-diffusion decoder (1.3B DiT that decodes an LDM latent to 4x "
        "resolution in 4 steps) and the Gemma-2-2B text encoder it is conditioned on. Reports the "
        f"detected family/variant. Weights: {HF_REPO} on Hugging Face, {WEIGHTS_LICENSE}.")
    CATEGORY = node_base.CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (PID_MODEL, "STRING")
    RETURN_NAMES = ("pid_model", "info")
    OUTPUT_TOOLTIPS = (
        "The PiD decoder (managed by ComfyUI's model memory manager) plus its prompt encoder. "
        "Connect to PiD Decode Latent or PiD Upscale 2K->4K.",
        "What was detected: family (16ch/sdxl/flux2), version (v1/v1.5), 2k or 2kto4k, accepted "
        "latent formats and output size range. Connect to a text display node if wanted.")

    @classmethod
    def INPUT_TYPES(cls):
        files = model_folders.checkpoint_names() or [NO_FILES]
        encoders = [NONE] + model_folders.text_encoder_names()
        return {
            "required": {
                "checkpoint": (files, {"tooltip": (
                    "PiD decoder file from models/diffusion_models/ (Comfy-Org repack, e.g. "
                    "pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors; files named pid_*) or "
                    "models/pid/ (e.g. the official model_ema_bf16.pth renamed pid_flux_v1.5.pth): "
                    ".safetensors, .sft, .pth or .pt. Ignored when 'download' picks a decoder.")}),
                "text_encoder": (encoders, {"tooltip": (
                    "Gemma-2-2B-it text encoder from models/text_encoders/ (e.g. "
                    "gemma_2_2b_it_elm_bf16.safetensors). PiD is conditioned on the prompt that "
                    "made the latent. 'none' only if a CLIP is connected below.")}),
                "dtype": (DTYPES, {"default": "auto", "tooltip": (
                    "Compute dtype of the decoder. auto = bf16 on GPUs that support it, else fp32 "
                    "(fp32 on the CPU). fp16 may overflow; the released weights are bf16.")}),
                "download": (release_choices(), {"default": OFF, "tooltip": (
                    f"off (default) = use the files above; nothing is downloaded. A file name "
                    f"downloads that file from huggingface.co/{REPACK_REPO} once (decoders "
                    f"~2.7-2.8 GB into models/diffusion_models/, Gemma encoders 2.4-5.2 GB into "
                    f"models/text_encoders/) and uses it in place of 'checkpoint' or "
                    f"'text_encoder'. A release name (flux_v1.5, sdxl_2kto4k, ...) downloads "
                    f"model_ema_bf16.pth of that variant from huggingface.co/{HF_REPO} into "
                    f"models/pid/pid_<release>.pth. Size and sha256 are checked against the hub "
                    f"before the file is kept. Decoder weights: {WEIGHTS_LICENSE}; Gemma: Gemma "
                    f"Terms of Use. *_512_to_2048 / *_2k: 512-px LDM -> 2048; *_1024_to_4096 / "
                    f"*_2kto4k / *_v1.5: 1024-px LDM -> 4096.")}),
            },
            "optional": {
                "attention": (list(host.ATTENTION_CHOICES), {"default": "pytorch", "tooltip": (
                    "pytorch = PyTorch's scaled-dot-product attention (default, as upstream). comfy = "
                    "ComfyUI's own attention, i.e. whatever ComfyUI was started with (--use-sage-attention, "
                    "--use-flash-attention, xformers, ...). SageAttention has been reported to give NaN / "
                    "black images with PiD FLUX.2 elsewhere; PiD checks every output and says so if it "
                    "happens (then choose pytorch).")}),
                "compile": (list(COMPILE_CHOICES), {"default": "off", "tooltip": (
                    "torch.compile the network: on = default mode, max-autotune = longer compile, "
                    "faster kernels (without CUDA graphs). Each new output or tile size compiles "
                    "once (about a minute, logged) and is reused while this node's output is "
                    "cached. Needs Triton on NVIDIA GPUs (a C++ compiler on the CPU); without a "
                    "working compiler PiD warns and decodes uncompiled.")}),
                "clip": ("CLIP", {"tooltip": (
                    "Optional: a Gemma-2-2B CLIP from Load CLIP (type 'pixeldit', newer ComfyUI). "
                    "Used instead of the text_encoder file when connected.")}),
            },
        }

    @node_base.explains_errors
    def load(self, checkpoint, text_encoder, dtype, download=OFF, attention="pytorch", compile="off", clip=None):
        path, encoder_path = _download(download)
        label = checkpoint if path is None else path
        if path is None and checkpoint == NO_FILES:
            raise CheckpointReadError(
                "No PiD decoder file was found in ComfyUI/models/pid/ or models/diffusion_models/ "
                f"(files named pid_*). Put a Comfy-Org PiD file (huggingface.co/{REPACK_REPO}) in "
                f"models/diffusion_models/ or an official model_ema_bf16.pth (huggingface.co/"
                f"{HF_REPO}) in models/pid/, or set 'download' to a file or release name.")
        if path is None:
            path = model_folders.checkpoint_path(checkpoint)
        if encoder_path is not None:
            text_encoder = os.path.basename(encoder_path)
        compute, mode = host.resolve_dtype(dtype), COMPILE_CHOICES[compile]
        attend = host.attention_function(attention)
        if quant_host.available() and quant_host.is_quantised_file(path):
            decoder = quant_host.load_quantised_decoder(path, host.offload_device(), compute, mode, attend)
        else:   # a quantised file without ComfyUI's quantised ops is refused here, naming the bf16 one
            decoder = load_decoder(path, device=host.offload_device(), dtype=compute, compile=mode,
                                   **({"attention": attend} if attend else {}))
        encoder = clip
        if encoder is None and text_encoder != NONE:
            encoder = load_text_encoder(encoder_path or model_folders.text_encoder_path(text_encoder))
        model = PiDModel(decoder=decoder, patcher=host.wrap_model(decoder.net),
                         text_encoder=encoder, checkpoint=label,
                         text_encoder_name="CLIP input" if clip is not None else text_encoder,
                         dtype=dtype_name(compute), attention=attention)
        return (model, model.describe())


def _download(choice: str):
    """(decoder path, text-encoder path) fetched for a ``download`` choice; (None, None) if off."""
    if choice == OFF:
        return None, None
    entry = lookup(choice)
    fetched = ensure_release(choice, model_folders.model_dir(entry.folder if entry else model_folders.PID_FOLDER))
    return (None, fetched) if entry.kind == "text_encoder" else (fetched, None)
