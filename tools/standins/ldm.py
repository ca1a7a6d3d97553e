"""Tiny diffusion models that ComfyUI's own detection sees as the real family.

For every DiT family ComfyUI derives the transformer's depth (and mostly its width) from the
weights (comfy/model_detection.py), so a handful of shape-bearing "seed" tensors is enough to make
`detect_unet_config` produce a small config (FLUX.1 keeps its width 3072, which ComfyUI 0.3.64
does not derive; Z-Image's 3840 and Qwen-Image's 3072 are fixed everywhere); ComfyUI's own model
class is then built from it on the meta device and its full key list becomes the file. SDXL is a
UNet whose detection needs model_channels 320 and transformer depths [0,0,2,2,10,10]; it is kept
at 320 channels on every level (channel_mult [1,1,1]) with a depth-1 middle block, which ComfyUI
still detects as SDXL. `check_detected` re-runs the detection on the finished key list and refuses
a file that would not be detected as the intended class.

Run inside a ComfyUI venv with ComfyUI on PYTHONPATH.
"""

from __future__ import annotations

import torch

from standins.weights import Spec, specs_from_state_dict


def _meta(*shape):
    return torch.empty(*shape, device="meta", dtype=torch.bfloat16)


def _blocks(prefix, n):
    return {f"{prefix}{i}.seed": _meta(1) for i in range(n)}


def _flux_seed(hidden, context, in_ch, vec, guidance, flux2):
    seed = {"double_blocks.0.img_attn.norm.key_norm.scale": _meta(128),
            "img_in.weight": _meta(hidden, in_ch), "txt_in.weight": _meta(hidden, context),
            **_blocks("double_blocks.", 1), **_blocks("single_blocks.", 1)}
    if vec:
        seed["vector_in.in_layer.weight"] = _meta(hidden, 768)
    if guidance:
        seed["guidance_in.in_layer.weight"] = _meta(hidden, 256)
    if flux2:
        seed["double_stream_modulation_img.lin.weight"] = _meta(1)
    return seed


def _seed(family):
    if family == "flux":  # FLUX.1-dev: one double and one single block at the real width 3072
        # (ComfyUI 0.33 derives the width from img_in, 0.3.64 fixes it at 3072 / 24 heads)
        return _flux_seed(3072, 4096, 64, vec=True, guidance=True, flux2=False)
    if family == "flux2":  # FLUX.2 klein 4B: Qwen3-4B context (3 x 2560), no guidance embed
        return _flux_seed(128, 7680, 128, vec=False, guidance=False, flux2=True)
    if family == "flux2_dev":  # FLUX.2 dev: guidance-distilled (guidance embed); the same tiny width and
        # the Qwen3-4B context, so the stand-in text encoder (see needs.py) feeds it
        return _flux_seed(128, 7680, 128, vec=False, guidance=True, flux2=True)
    if family == "zimage":  # width 3840 is how ComfyUI tells Z-Image from Lumina 2: 1 layer
        return {"cap_embedder.1.weight": _meta(3840, 2560), "noise_refiner.0.attention.k_norm.weight": _meta(128),
                "cap_pad_token": _meta(1, 3840), **_blocks("layers.", 1)}
    if family == "qwen_image":  # width fixed (24 x 128), depth from the weights: 1 block
        return {"txt_norm.weight": _meta(3584), "img_in.weight": _meta(3072, 64),
                **_blocks("transformer_blocks.", 1)}
    if family == "sd3":  # MMDiT: width = 64 x depth; depth 2, SD3-medium's 192x192 pos_embed
        return {"joint_blocks.0.context_block.attn.qkv.weight": _meta(1),
                "joint_blocks.1.context_block.attn.qkv.weight": _meta(1),
                "x_embedder.proj.weight": _meta(128, 16, 2, 2), "final_layer.linear.weight": _meta(64, 128),
                "y_embedder.mlp.0.weight": _meta(128, 2048), "context_embedder.weight": _meta(128, 4096),
                "pos_embed": _meta(1, 192 * 192, 128)}
    raise KeyError(family)


SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "out_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "channel_mult": [1, 1, 1],
             "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 2048,
             "num_head_channels": 64, "use_temporal_resblock": False, "use_temporal_attention": False}

EXPECTED = {"flux": "Flux", "flux2": "Flux2", "flux2_dev": "Flux2", "zimage": "ZImage", "qwen_image": "QwenImage",
            "sd3": "SD3", "sdxl": "SDXL"}


def model_config(family):
    """ComfyUI's supported-model config object for the tiny model of `family` (None when this
    ComfyUI has no such family)."""
    import comfy.model_detection as md
    import comfy.supported_models as sm

    if family == "sdxl":
        return sm.SDXL(dict(SDXL_UNET))
    seed = _seed(family)
    unet_config = md.detect_unet_config(seed, "")
    config = md.model_config_from_unet_config(unet_config, seed) if unet_config else None
    if config is None or type(config).__name__ != EXPECTED[family]:
        return None
    return config


def diffusion_state(config):
    with torch.device("meta"):
        model = config.get_model({}, "", device="meta")
    return model.diffusion_model.state_dict()


def check_detected(state, family):
    import comfy.model_detection as md

    unet_config = md.detect_unet_config(state, "")
    config = md.model_config_from_unet_config(unet_config, state) if unet_config else None
    got = type(config).__name__ if config is not None else None
    if got != EXPECTED[family]:
        raise RuntimeError(f"stand-in for {family} is detected as {got}, not {EXPECTED[family]}")
    return config


def unet_file_specs(family, dtype=torch.bfloat16):
    """Keys of a diffusion-model-only file (UNETLoader), in the layout the real file uses."""
    config = model_config(family)
    if config is None:
        return None
    state = diffusion_state(config)
    check_detected(state, family)
    specs = specs_from_state_dict(state, dtype)
    if family in ("flux", "flux2", "flux2_dev"):  # BFL files name the q/k norms ".scale" (ComfyUI renames them)
        specs = {(k[: -len(".weight")] + ".scale" if k.endswith("_norm.weight") else k): v
                 for k, v in specs.items()}
    return specs


def checkpoint_specs(family, clip_state, vae_specs, dtype=torch.float16):
    """A CheckpointLoaderSimple file: diffusion model, text encoders and VAE under the prefixes
    ComfyUI's own `*_for_saving` functions give them."""
    config = model_config(family)
    if config is None:
        return None
    state = diffusion_state(config)
    check_detected(state, family)
    out = specs_from_state_dict(config.process_unet_state_dict_for_saving(dict(state)), dtype)
    clip_saved = config.process_clip_state_dict_for_saving(dict(clip_state))
    out.update(specs_from_state_dict(clip_saved, dtype))
    vae_prefix = config.vae_key_prefix[0]
    out.update({vae_prefix + k: v for k, v in vae_specs.items()})
    return out


def vae_specs(z_channels, quant_convs, dtype=torch.float16):
    """A full-size KL VAE (ComfyUI builds its encoder at fixed width 128): FLUX.1/SD3 style
    (16 channels, no quant convs) or SD/SDXL style (4 channels with quant convs)."""
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    cfg = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
           "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    out = {}
    with torch.device("meta"):
        for prefix, module in (("encoder.", Encoder(**cfg)), ("decoder.", Decoder(**cfg))):
            out.update(specs_from_state_dict(module.state_dict(), dtype, prefix=prefix))
    if quant_convs:
        z = z_channels
        out["quant_conv.weight"] = Spec((2 * z, 2 * z, 1, 1), dtype)
        out["quant_conv.bias"] = Spec((2 * z,), dtype)
        out["post_quant_conv.weight"] = Spec((z, z, 1, 1), dtype)
        out["post_quant_conv.bias"] = Spec((z,), dtype)
    return out
