"""Latent formats: the one place that knows each LDM family's latent (nv-tlabs/PiD @2c8814c
``pid/_src/inference/from_ldm.py``; ComfyUI ``comfy/latent_formats.py``). A ``LatentFormat`` holds a
family's channels, VAE factor, ComfyUI class names, VAE signature, aliases and normalisation (raw
VAE latent -> PiD model space, as ComfyUI's ``process_in``). A stopped latent comes in the noise
frame of the sampler that made it: ``flow`` ((1-s) x0 + s eps), ``comfy_flow`` (ComfyUI's stored
x_t / (1-s) of a flow model) or ``ve`` (x0 + s eps, EPS samplers); ``to_pid_frame`` rescales it
exactly to the frame PiD was trained in (flow, or VP for SDXL).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from ..errors import LatentMismatchError, PiDInputError

FLOW = "flow"               # (1 - s) x0 + s eps; s in [0, 1]
COMFY_FLOW = "comfy_flow"   # x_t / (1 - s): ComfyUI's stored latent of a flow model; s in [0, 1)
VE = "ve"                   # x0 + s eps (EPS / v-prediction samplers); s >= 0
FRAMES = (FLOW, COMFY_FLOW, VE)
VP = "vp"                   # sqrt(1 - s^2) x0 + s eps: PiD's training frame for SDXL

# Qwen-Image (Wan2.1-style VAE) per-channel statistics: ComfyUI comfy/latent_formats.py Wan21
# latents_mean / latents_std (= the Qwen-Image VAE config's latents_mean / latents_std).
_QWEN_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
_QWEN_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# Largest |value| accepted in a raw LATENT. Real VAE latents stay within a few tens; far beyond
# this the tensor is garbage (or fp16 overflow) and would decode to a saturated image silently.
LATENT_ABS_LIMIT = 1e4


@dataclass(frozen=True)
class LatentFormat:
    """How one family's raw LATENT maps to PiD model space: ``(z - shift) * scale / std``.

    ``shift``/``std`` are per-channel tuples or one value for all channels. ``channels`` and
    ``vae_factor`` are None for "normalized" (already model space, any channel count).
    """

    name: str
    channels: Optional[int]
    vae_factor: Optional[int]
    frame: str = FLOW                 # default input frame (upstream's convention for this family)
    pid_frame: str = FLOW             # the frame PiD was trained with for this family (flow or vp)
    comfy_frame: str = COMFY_FLOW     # default input frame of a ComfyUI LATENT of this family
    scale: float = 1.0
    shift: tuple = (0.0,)
    std: tuple = (1.0,)
    label: str = ""                   # the LDMs, for messages: "FLUX.1 / Z-Image"
    description: str = ""             # the VAE, for messages
    comfy_classes: tuple = ()         # ComfyUI latent_formats class names of this layout
    aliases: tuple = ()
    vae_channels: tuple = ()          # ``latent_channels`` of a ComfyUI VAE of this family
    video_vae: bool = False           # the ComfyUI VAE is 3-D (latent_dim 3)

    def process_in(self, raw: Tensor) -> Tensor:
        """Raw ComfyUI LATENT ``[B,C,h,w]`` (or ``[B,C,1,h,w]``), checked -> PiD model space, float32."""
        z = as_4d(raw)
        if not z.is_floating_point():
            raise PiDInputError(
                f"latent must be a floating-point tensor; got dtype {z.dtype}. "
                "Connect the LATENT produced by a sampler or a VAE Encode node.", input_name="latent")
        self.check_channels(z)
        return self.normalize(z)

    def normalize(self, z: Tensor) -> Tensor:
        """A checked raw latent ``[B,C,h,w]`` -> PiD model space, float32 (``process_in``'s maths)."""
        z = z.to(torch.float32)
        shift = torch.tensor(self.shift, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
        return (z - shift) * self.scale / std

    def to_pid_frame(self, latent: Tensor, sigma, frame: str | None = None) -> tuple[Tensor, Tensor]:
        """Map a model-space latent in noise ``frame`` (default: the format's) at noise level
        ``sigma`` to PiD's training frame; float32 tensors, the sigma as ``[B]``.

        ``sigma``: a number or ``[B]``/``[1]``. A flow latent for a flow PiD passes unchanged.
        """
        frame = self.frame if frame is None else frame
        if frame not in FRAMES:
            raise PiDInputError(f"noise frame {frame!r} is unknown; expected 'flow', 'comfy_flow' or 've'.",
                                input_name="noise_frame")
        if not isinstance(latent, Tensor) or latent.dim() != 4:
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise PiDInputError(f"to_pid_frame expects a 4-D latent [B,C,h,w]; got {shape}.")
        latent = latent.to(torch.float32)
        s = _sigma_vector(sigma, latent.shape[0])      # checked on the host, then moved once
        if frame != VE and bool((s > 1.0).any() if frame == FLOW else (s >= 1.0).any()):
            raise PiDInputError(
                f"sigma {s.tolist()} is above 1 for the flow-matching format '{self.name}'; "
                "flow sigmas lie in [0, 1] (below 1 for a ComfyUI LATENT, which is stored as "
                "x_t / (1 - sigma)). Pass the sigma of the step where the LDM stopped (0 for a "
                "finished latent), or pick the 'sdxl' format for VE (EPS) sigmas.", input_name="sigma")
        s = s.to(latent.device)
        if frame == COMFY_FLOW:
            latent, frame = latent * (1.0 - s).view(-1, 1, 1, 1), FLOW
        if frame == FLOW and self.pid_frame == FLOW:
            return latent, s
        if frame == FLOW:   # flow -> VP: signal 1 - s, noise s, rescaled to unit norm
            denom = torch.sqrt((1.0 - s) * (1.0 - s) + s * s)
        elif self.pid_frame == VP:   # VE -> VP (diffusers' scale_model_input)
            denom = torch.sqrt(s * s + 1.0)
        else:   # VE -> flow: signal 1, noise s
            denom = 1.0 + s
        return latent / denom.view(-1, 1, 1, 1), s / denom

    def check_channels(self, z: Tensor) -> None:
        """Raise LatentMismatchError when ``z`` (4-D) has the wrong channel count."""
        if self.channels is None or z.shape[1] == self.channels:
            return
        raise LatentMismatchError(
            f"latent format '{self.name}' ({self.description}) expects {self.channels}-channel "
            f"latents [B,{self.channels},h,w]; the LATENT has shape {tuple(z.shape)} with "
            f"{z.shape[1]} channels{channel_hint(z.shape[1])}. Pick the latent format of the "
            "model that made the latent.", input_name="latent_format")


# One object per family. Constants: ComfyUI comfy/latent_formats.py (class in brackets).
LATENT_FORMATS: dict[str, LatentFormat] = {f.name: f for f in (
    # [Flux] scale_factor 0.3611, shift_factor 0.1159 (FLUX.1 VAE; Z-Image, Chroma, HiDream,
    # Lumina 2, Boogu and others sample in it)
    LatentFormat("flux", 16, 8, FLOW, scale=0.3611, shift=(0.1159,), label="FLUX.1 / Z-Image",
                 description="FLUX.1 / Z-Image / Boogu VAE", comfy_classes=("Flux",),
                 aliases=("zimage", "flux1", "boogu"), vae_channels=(16,)),
    # [SD3] scale_factor 1.5305, shift_factor 0.0609
    LatentFormat("sd3", 16, 8, FLOW, scale=1.5305, shift=(0.0609,), label="SD3",
                 description="SD3 / SD3.5 VAE", comfy_classes=("SD3",), aliases=("sd35",),
                 vae_channels=(16,)),
    # [SDXL] scale_factor 0.13025, no shift; SDXL is an EPS model (VE frame); PiD trained in VP
    LatentFormat("sdxl", 4, 8, VE, VP, VE, scale=0.13025, label="SDXL", description="SDXL VAE",
                 comfy_classes=("SDXL",), vae_channels=(4,)),
    # [Wan21] (latent - latents_mean) * 1.0 / latents_std (Qwen-Image VAE, single frame)
    LatentFormat("qwenimage", 16, 8, FLOW, shift=_QWEN_MEAN, std=_QWEN_STD, label="Qwen-Image",
                 description="Qwen-Image VAE", comfy_classes=("Wan21",), aliases=("qwen",),
                 vae_channels=(16,), video_vae=True),
    # [Flux2] identity: ComfyUI's FLUX.2 VAE already emits the 2x2-packed, BatchNorm-normalised
    # 128-channel latent at 1/16 resolution (it reports 128 channels, 32 before packing).
    LatentFormat("flux2", 128, 16, FLOW, label="FLUX.2", description="FLUX.2 / FLUX.2-klein VAE",
                 comfy_classes=("Flux2",), aliases=("klein",), vae_channels=(128, 32)),
    # identity for callers that already hold PiD model-space latents (any channel count)
    LatentFormat("normalized", None, None, FLOW, comfy_frame=FLOW, description="already in PiD model space"),
)}
ALIASES: dict[str, str] = {a: f.name for f in LATENT_FORMATS.values() for a in f.aliases}
# The formats a ComfyUI graph can produce (everything but "normalized").
COMFY_FORMATS = tuple(n for n, f in LATENT_FORMATS.items() if f.comfy_classes)


def _key(name: str) -> str:
    return re.sub(r"[-_. ]", "", name.lower())


def get_latent_format(name_or_format: Union[str, LatentFormat]) -> LatentFormat:
    """Look a format up by name or alias (case, '-', '_', '.' and spaces ignored)."""
    if isinstance(name_or_format, LatentFormat):
        return name_or_format
    if name_or_format in LATENT_FORMATS:
        return LATENT_FORMATS[name_or_format]
    if not isinstance(name_or_format, str):
        raise PiDInputError(
            f"latent format must be a name or a LatentFormat; got {type(name_or_format).__name__}. "
            f"Valid names: {_valid_names()}.", input_name="latent_format")
    key = ALIASES.get(_key(name_or_format), _key(name_or_format))
    if key not in LATENT_FORMATS:
        raise PiDInputError(f"unknown latent format {name_or_format!r}. Valid names: {_valid_names()}.",
                            input_name="latent_format")
    return LATENT_FORMATS[key]


def format_for_comfy_class(class_name: str) -> Optional[LatentFormat]:
    """The format of a ComfyUI ``latent_formats`` class (exact name: ``Flux`` subclasses ``SD3``)."""
    return next((f for f in LATENT_FORMATS.values() if class_name in f.comfy_classes), None)


def formats_for_vae(channels, video: bool) -> tuple[str, ...]:
    """Formats a ComfyUI VAE reporting ``channels`` latent channels (3-D if ``video``) can make.

    FLUX.1 and SD3 VAEs share one architecture, so both stay possible."""
    return tuple(f.name for f in LATENT_FORMATS.values()
                 if channels in f.vae_channels and f.video_vae == bool(video))


def channel_hint(channels: int) -> str:
    """`` (that looks like a SDXL latent)`` for known channel counts, else ``""``."""
    seen = [f.label for f in LATENT_FORMATS.values() if f.channels == int(channels) and f.label]
    return f" (that looks like a {' / '.join(seen)} latent)" if seen else ""


def as_4d(latent: Tensor) -> Tensor:
    """``latent`` as ``[B,C,h,w]``, squeezing the single frame of a ``[B,C,1,h,w]`` LATENT.

    ComfyUI's Wan21-format LDMs (Qwen-Image) emit 5-D LATENTs with one frame.
    """
    if not isinstance(latent, Tensor):
        raise PiDInputError(
            f"latent must be a torch.Tensor [B,C,h,w]; got {type(latent).__name__}. "
            "Pass LATENT['samples'], not the LATENT dict.", input_name="latent")
    if latent.dim() == 4:
        return latent
    if latent.dim() == 5 and latent.shape[2] == 1:
        return latent[:, :, 0]
    if latent.dim() == 5:
        raise PiDInputError(
            f"got a 5-D latent of shape {tuple(latent.shape)} with {latent.shape[2]} frames; "
            "PiD decodes single images: expected [B,C,h,w] or [B,C,1,h,w]. "
            "Decode video latents one frame at a time.", input_name="latent")
    fix = ("A [C,h,w] tensor lacks the batch axis: add it with latent.unsqueeze(0)."
           if latent.dim() == 3 else
           "Connect LATENT['samples'] from a sampler, VAE Encode or Load Latent.")
    raise PiDInputError(
        f"got a {latent.dim()}-D latent of shape {tuple(latent.shape)}; "
        f"expected [B,C,h,w] (or [B,C,1,h,w] from a Qwen-Image/Wan VAE). {fix}", input_name="latent")


def check_latent(latent: Tensor, checkpoint) -> Tensor:
    """Validate a raw LATENT for ``checkpoint`` (a ``files.detect.DecoderInfo``); returns it 4-D.

    Most basic problem first: not a latent, then the channel count (before any question of
    format), then the values.
    """
    z = as_4d(latent)
    if not z.is_floating_point():
        raise PiDInputError(
            f"latent has dtype {z.dtype}; expected a floating-point tensor. Connect the LATENT "
            f"from a sampler, VAE Encode or Load Latent.", input_name="latent")
    if z.shape[0] < 1 or z.shape[-1] < 1 or z.shape[-2] < 1:
        raise PiDInputError(
            f"latent has an empty dimension: shape {tuple(z.shape)}; expected [B,C,h,w] with "
            f"B, h and w at least 1. The node that made it produced no latent (an empty batch "
            f"or a 0-pixel crop); check that node's size and batch settings.", input_name="latent")
    if z.is_meta:
        raise PiDInputError("latent is on the 'meta' device (shape only, no values); pass a real tensor.",
                            input_name="latent")
    channels = checkpoint.latent_channels
    if z.shape[1] != channels:
        raise LatentMismatchError(
            f"This PiD checkpoint ({checkpoint.describe()}) expects {channels}-channel latents; the "
            f"LATENT has {z.shape[1]} channels{channel_hint(z.shape[1])} (shape "
            f"{tuple(z.shape)}). Load the PiD checkpoint for the model that made the latent, "
            f"or decode a latent of that model.", input_name="checkpoint")
    if not bool(torch.isfinite(z).all()):
        raise PiDInputError(
            "latent contains NaN or infinite values; the sampler that produced it diverged "
            "(try another seed, fewer LoRAs, or fp32/bf16 instead of fp16).", input_name="latent")
    peak = float(z.abs().max())
    if peak > LATENT_ABS_LIMIT:
        raise PiDInputError(
            f"latent values reach {peak:.3g}; VAE latents stay far below {LATENT_ABS_LIMIT:g} "
            f"in magnitude, so this tensor is not a usable latent (wrongly scaled, or the "
            f"sampler overflowed). Connect the LATENT from a sampler, VAE Encode or Load Latent.",
            input_name="latent")
    return z


def choose_format(requested, checkpoint) -> LatentFormat:
    """The format to decode with: ``requested`` (a name, alias, LatentFormat, or None/"auto" =
    the checkpoint's only trained format), checked against the formats ``checkpoint`` (a
    ``files.detect.DecoderInfo``) was trained on."""
    trained = checkpoint.latent_formats
    if requested in (None, "auto", ""):
        if len(trained) != 1:
            raise LatentMismatchError(
                f"This PiD checkpoint ({checkpoint.describe()}) accepts several latent formats with the "
                f"same channel count ({', '.join(trained)}), which cannot be told apart "
                f"from the tensor. Choose the latent format of the model that made the latent.",
                input_name="latent_format")
        requested = trained[0]
    fmt = get_latent_format(requested)
    if fmt.name != "normalized" and fmt.name not in trained:
        raise LatentMismatchError(
            f"Latent format '{fmt.name}' ({fmt.description}) does not fit this PiD checkpoint, "
            f"which was trained on {'/'.join(trained)} latents ({checkpoint.describe()}). "
            f"Load the PiD checkpoint made for {fmt.name} or pick the matching latent format.",
            input_name="latent_format")
    return fmt


def _sigma_vector(sigma, batch: int) -> Tensor:
    """Number, 0-d, [1] or [B] sigma -> float32 [B] on the CPU, checked finite and >= 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise PiDInputError(
            f"sigma must be a number or a tensor of shape [B]; got {type(sigma).__name__} "
            f"({sigma!r:.40}). {_SIGMA_FIX}", input_name="sigma")
    if isinstance(sigma, (int, float)) and not math.isfinite(sigma):
        raise PiDInputError(f"sigma must be a finite number; got {sigma}. {_SIGMA_FIX}", input_name="sigma")
    if isinstance(sigma, Tensor) and (sigma.is_complex() or sigma.dtype == torch.bool):
        raise PiDInputError(f"sigma must be a real number; got a {sigma.dtype} tensor. {_SIGMA_FIX}",
                            input_name="sigma")
    s = torch.as_tensor(sigma).detach().to("cpu", torch.float32).reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch).clone()
    elif s.numel() != batch:
        raise PiDInputError(
            f"sigma has {s.numel()} values but the latent batch is {batch}; "
            f"pass one sigma or one per latent ([{batch}]).", input_name="sigma")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise PiDInputError(
            f"sigma must be finite and >= 0 (a noise level); got {s.tolist()}. {_SIGMA_FIX}", input_name="sigma")
    return s


_SIGMA_FIX = ("Pass the sigma the latent sits at: 0 for a finished latent, or the stop sigma of "
              "KSamplerAdvanced (PiD Stop Sigma computes it).")


def _valid_names() -> str:
    aliases = ", ".join(f"{a}->{t}" for a, t in ALIASES.items())
    return f"{', '.join(LATENT_FORMATS)} (aliases: {aliases})"
