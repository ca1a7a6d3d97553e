"""PiD Load Model: a decoder file (+ optional download) and the Gemma-2-2B prompt encoder."""

from __future__ import annotations

from ..pid_core.config import HF_REPO, WEIGHTS_LICENSE
from ..pid_core.decoder import load_decoder
from ..pid_core.errors import CheckpointReadError
from ..pid_core.loading import dtype_name
from . import host, node_base
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
        files = host.checkpoint_names() or [NO_FILES]
        encoders = [NONE] + host.text_encoder_names()
        return {
            "required": {
                "checkpoint": (files, {"tooltip": (
                    "PiD decoder file from ComfyUI/models/pid/ (or a PiD-named file in "
                    "models/diffusion_models/): .safetensors, .sft, .pth or .pt, e.g. the official "
                    "model_ema_bf16.pth renamed pid_flux_v1.5.pth. Ignored when 'download' picks a "
                    "release.")}),
                "text_encoder": (encoders, {"tooltip": (
                    "Gemma-2-2B-it text encoder from models/text_encoders/ (e.g. "
                    "gemma_2_2b_it_elm_bf16.safetensors). PiD is conditioned on the prompt that "
                    "made the latent. 'none' only if a CLIP is connected below.")}),
                "dtype": (DTYPES, {"default": "auto", "tooltip": (
                    "Compute dtype of the decoder. auto = bf16 on GPUs that support it, else fp32 "
                    "(fp32 on the CPU). fp16 may overflow; the released weights are bf16.")}),
                "download": (release_choices(), {"default": OFF, "tooltip": (
                    f"off (default) = use 'checkpoint'. A release name downloads "
                    f"model_ema_bf16.pth of that variant from huggingface.co/{HF_REPO} "
                    f"(~2.6 GB, {WEIGHTS_LICENSE}) into models/pid/ once, then loads it. "
                    "*_2k: 512-px LDM -> 2048; *_2kto4k / *_v1.5: 1024-px LDM -> 4096.")}),
            },
            "optional": {
                "clip": ("CLIP", {"tooltip": (
                    "Optional: a Gemma-2-2B CLIP from Load CLIP (type 'pixeldit', newer ComfyUI). "
                    "Used instead of the text_encoder file when connected.")}),
            },
        }

    def load(self, checkpoint, text_encoder, dtype, download=OFF, clip=None):
        if download != OFF:
            path = ensure_release(download, host.pid_dir())
        elif checkpoint == NO_FILES:
            raise CheckpointReadError(
                "No PiD decoder file was found in ComfyUI/models/pid/. Download model_ema_bf16.pth "
                f"of a variant from huggingface.co/{HF_REPO} into models/pid/, or set 'download' "
                "to a release name to fetch it.")
        else:
            path = host.checkpoint_path(checkpoint)
        compute = host.resolve_dtype(dtype)
        decoder = load_decoder(path, device=host.offload_device(), dtype=compute)
        encoder = clip
        if encoder is None and text_encoder != NONE:
            encoder = load_text_encoder(host.text_encoder_path(text_encoder))
        model = PiDModel(decoder=decoder, patcher=host.wrap_model(decoder.net),
                         text_encoder=encoder, checkpoint=checkpoint if download == OFF else path,
                         text_encoder_name="CLIP input" if clip is not None else text_encoder,
                         dtype=dtype_name(compute))
        return (model, model.describe())
