"""Latent formats: turn a raw ComfyUI LATENT into the latent space PiD was trained on.

PiD consumes the latent in the LDM's own *model-space* normalisation (what the upstream
tokenizer's ``encode()`` returns), while a ComfyUI LATENT holds the raw VAE output. Each
backbone therefore gets one small :class:`LatentFormat` whose ``process_in`` is exactly
ComfyUI's ``latent_formats.<X>.process_in`` (PID_SPEC §3), and whose ``to_pid_frame`` maps
a noisy latent and its sigma into the flow/VP frame PiD's gates were trained with (§4).

Constants come from ComfyUI ``comfy/latent_formats.py`` (classes ``Flux``, ``SD3``, ``SDXL``,
``Wan21`` — used by Qwen-Image — and ``Flux2``), which match the upstream nv-tlabs/PiD
tokenizer configs (scale/shift of the diffusers VAE configs, Qwen-Image VAE
``latents_mean``/``latents_std``), as listed in shared/PID_SPEC.md §3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .errors import LatentMismatchError, PiDInputError

FLOW = "flow"  # x_t = (1 - s) x0 + s eps; sigma already in [0, 1]
VE = "ve"      # x = x0 + s eps (SDXL/EPS models); PiD wants the VP frame

# Qwen-Image (Wan2.1-style VAE) per-channel statistics: ComfyUI latent_formats.Wan21
# latents_mean / latents_std (= Qwen-Image VAE config latents_mean / latents_std).
_QWEN_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
_QWEN_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# A hint for error messages: which backbones produce a latent with this many channels.
_CHANNEL_HINTS = {4: "SDXL", 16: "FLUX.1 / Z-Image / SD3 / Qwen-Image", 128: "FLUX.2"}

# Largest |value| accepted in a raw LATENT. Real VAE latents stay within a few tens; far beyond
# this the tensor is garbage (or fp16 overflow) and would decode to a saturated image silently.
LATENT_ABS_LIMIT = 1e4


def channel_hint(channels: int) -> str:
    """`` (that looks like a SDXL latent)`` for known channel counts, else ``""``."""
    seen = _CHANNEL_HINTS.get(int(channels))
    return f" (that looks like a {seen} latent)" if seen else ""


@dataclass(frozen=True)
class LatentFormat:
    """How one backbone's raw LATENT maps to PiD model space: ``(z - shift) * scale / std``.

    ``shift`` and ``std`` are per-channel tuples or a single value broadcast to all channels.
    ``channels`` is None for "normalized" (any channel count accepted). ``vae_factor`` is the
    latent-to-pixel down factor of the LDM's VAE (None when unknown: "normalized").
    """

    name: str
    channels: Optional[int]
    vae_factor: Optional[int]
    frame: str = FLOW
    scale: float = 1.0
    shift: tuple = (0.0,)
    std: tuple = (1.0,)
    description: str = ""

    def process_in(self, raw: Tensor) -> Tensor:
        """Raw ComfyUI LATENT ``[B,C,h,w]`` (or ``[B,C,1,h,w]``) -> PiD model space, float32."""
        z = as_4d(raw)
        if not z.is_floating_point():
            raise PiDInputError(
                f"latent must be a floating-point tensor; got dtype {z.dtype}. "
                "Connect the LATENT produced by a sampler or a VAE Encode node."
            )
        self.check_channels(z)
        z = z.to(torch.float32)
        shift = _per_channel(self.shift, z)
        std = _per_channel(self.std, z)
        return (z - shift) * self.scale / std

    def to_pid_frame(self, latent: Tensor, sigma) -> tuple[Tensor, Tensor]:
        """Map a model-space latent and its noise level to PiD's frame; returns float32 tensors.

        Flow formats are returned unchanged. SDXL (VE frame ``x0 + s*eps``) becomes the VP frame
        PiD was trained with: ``x / sqrt(s^2 + 1)`` and ``s / sqrt(s^2 + 1)`` (PID_SPEC §4).
        ``sigma`` is a number or a ``[B]``/``[1]`` tensor; the returned sigma is ``[B]``.
        """
        if not isinstance(latent, Tensor) or latent.dim() != 4:
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise PiDInputError(f"to_pid_frame expects a 4-D latent [B,C,h,w]; got {shape}.")
        latent = latent.to(torch.float32)
        s = _sigma_vector(sigma, latent.shape[0], latent.device)
        if self.frame == VE:
            denom = torch.sqrt(s * s + 1.0)
            return latent / denom.view(-1, 1, 1, 1), s / denom
        if bool((s > 1.0).any()):
            raise PiDInputError(
                f"sigma {s.tolist()} is above 1 for the flow-matching format '{self.name}'; "
                "flow sigmas lie in [0, 1]. Pass the sigma of the step where the LDM stopped "
                "(0 for a finished latent), or pick the 'sdxl' format for VE (EPS) sigmas."
            )
        return latent, s

    def check_channels(self, z: Tensor) -> None:
        """Raise LatentMismatchError when ``z`` (4-D) has the wrong channel count."""
        if self.channels is None or z.shape[1] == self.channels:
            return
        looks_like = channel_hint(z.shape[1])
        raise LatentMismatchError(
            f"latent format '{self.name}' ({self.description}) expects {self.channels}-channel "
            f"latents [B,{self.channels},h,w]; the LATENT has shape {tuple(z.shape)} with "
            f"{z.shape[1]} channels{looks_like}. Pick the latent format of the model that made "
            "the latent."
        )


# One object per backbone. Constants: ComfyUI comfy/latent_formats.py (class in brackets).
LATENT_FORMATS: dict[str, LatentFormat] = {
    # [Flux] scale_factor 0.3611, shift_factor 0.1159 (FLUX.1 VAE; Z-Image and Boogu share it)
    "flux": LatentFormat("flux", 16, 8, FLOW, scale=0.3611, shift=(0.1159,),
                         description="FLUX.1 / Z-Image / Boogu VAE"),
    # [SD3] scale_factor 1.5305, shift_factor 0.0609
    "sd3": LatentFormat("sd3", 16, 8, FLOW, scale=1.5305, shift=(0.0609,),
                        description="SD3 / SD3.5 VAE"),
    # [SDXL] scale_factor 0.13025, no shift; EPS model, so noisy latents are in the VE frame
    "sdxl": LatentFormat("sdxl", 4, 8, VE, scale=0.13025, description="SDXL VAE"),
    # [Wan21] (latent - latents_mean) * 1.0 / latents_std (Qwen-Image VAE, single frame)
    "qwenimage": LatentFormat("qwenimage", 16, 8, FLOW, shift=_QWEN_MEAN, std=_QWEN_STD,
                              description="Qwen-Image VAE"),
    # [Flux2] identity: ComfyUI's FLUX.2 VAE already emits the 2x2-packed, BatchNorm-normalised
    # 128-channel latent at 1/16 resolution.
    "flux2": LatentFormat("flux2", 128, 16, FLOW, description="FLUX.2 / FLUX.2-klein VAE"),
    # identity for callers that already hold PiD model-space latents (any channel count)
    "normalized": LatentFormat("normalized", None, None, FLOW,
                               description="already in PiD model space"),
}

ALIASES: dict[str, str] = {
    "zimage": "flux",
    "flux1": "flux",
    "boogu": "flux",
    "sd35": "sd3",
    "qwen": "qwenimage",
    "klein": "flux2",
}


def get_latent_format(name_or_format: Union[str, LatentFormat]) -> LatentFormat:
    """Look a format up by name or alias (case, '-', '_', '.' and spaces ignored)."""
    if isinstance(name_or_format, LatentFormat):
        return name_or_format
    if not isinstance(name_or_format, str):
        raise PiDInputError(
            f"latent format must be a name or a LatentFormat; got {type(name_or_format).__name__}. "
            f"Valid names: {_valid_names()}."
        )
    key = "".join(ch for ch in name_or_format.lower() if ch not in "-_. ")
    key = ALIASES.get(key, key)
    if key not in LATENT_FORMATS:
        raise PiDInputError(
            f"unknown latent format {name_or_format!r}. Valid names: {_valid_names()}."
        )
    return LATENT_FORMATS[key]


def as_4d(latent: Tensor) -> Tensor:
    """Return ``latent`` as ``[B,C,h,w]``, squeezing the singleton time axis of ``[B,C,1,h,w]``.

    Qwen-Image / Wan-style VAEs in ComfyUI may emit a 5-D LATENT with one frame.
    """
    if not isinstance(latent, Tensor):
        raise PiDInputError(
            f"latent must be a torch.Tensor [B,C,h,w]; got {type(latent).__name__}. "
            "Pass LATENT['samples'], not the LATENT dict."
        )
    if latent.dim() == 4:
        return latent
    if latent.dim() == 5 and latent.shape[2] == 1:
        return latent[:, :, 0]
    if latent.dim() == 5:
        raise PiDInputError(
            f"got a 5-D latent of shape {tuple(latent.shape)} with {latent.shape[2]} frames; "
            "PiD decodes single images: expected [B,C,h,w] or [B,C,1,h,w]. "
            "Decode video latents one frame at a time."
        )
    fix = ("A [C,h,w] tensor lacks the batch axis: add it with latent.unsqueeze(0)."
           if latent.dim() == 3 else
           "Connect LATENT['samples'] from a sampler, VAE Encode or Load Latent.")
    raise PiDInputError(
        f"got a {latent.dim()}-D latent of shape {tuple(latent.shape)}; "
        f"expected [B,C,h,w] (or [B,C,1,h,w] from a Qwen-Image/Wan VAE). {fix}"
    )


def _per_channel(values: tuple, z: Tensor) -> Tensor:
    return torch.tensor(values, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)


def _sigma_vector(sigma, batch: int, device) -> Tensor:
    """Number, 0-d, [1] or [B] sigma -> float32 [B] on ``device``, checked finite and >= 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise PiDInputError(
            f"sigma must be a number or a tensor of shape [B]; got {type(sigma).__name__} "
            f"({sigma!r:.40}). {_SIGMA_FIX}"
        )
    if isinstance(sigma, (int, float)) and not math.isfinite(sigma):
        raise PiDInputError(f"sigma must be a finite number; got {sigma}. {_SIGMA_FIX}")
    if isinstance(sigma, Tensor) and (sigma.is_complex() or sigma.dtype == torch.bool):
        raise PiDInputError(f"sigma must be a real number; got a {sigma.dtype} tensor. {_SIGMA_FIX}")
    s = torch.as_tensor(sigma, dtype=torch.float32, device=device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch).clone()
    elif s.numel() != batch:
        raise PiDInputError(
            f"sigma has {s.numel()} values but the latent batch is {batch}; "
            f"pass one sigma or one per latent ([{batch}])."
        )
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise PiDInputError(
            f"sigma must be finite and >= 0 (a noise level); got {s.tolist()}. {_SIGMA_FIX}")
    return s


_SIGMA_FIX = ("Pass the sigma the latent sits at: 0 for a finished latent, or the stop sigma of "
              "KSamplerAdvanced (PiD Stop Sigma computes it).")


def _valid_names() -> str:
    aliases = ", ".join(f"{a}->{t}" for a, t in ALIASES.items())
    return f"{', '.join(LATENT_FORMATS)} (aliases: {aliases})"
