"""Low-frequency / colour anchoring of an upscaled image to its source.

PiD re-synthesises detail; at 4x it can drift a little in tone or colour over large areas. The
2K->4K upscaler therefore (optionally) replaces the output's low frequencies with the source's:

    out' = out + blur(source_upscaled) - blur(out)

where ``blur`` keeps only structure larger than ``cutoff`` output pixels (area downsample, then a
smooth bicubic upsample back). Fine detail — what PiD adds — is untouched; broad colour and
brightness follow the source exactly. ``strength`` blends between no anchoring (0) and full (1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PiDInputError
from .sizing import resize_bchw


def low_pass(x: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Structure of ``[B, C, H, W]`` coarser than ``cutoff`` pixels, at full size."""
    h, w = x.shape[-2:]
    small = (max(1, round(h / cutoff)), max(1, round(w / cutoff)))
    coarse = F.interpolate(x, size=small, mode="area")
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def anchor_colors(image: torch.Tensor, source: torch.Tensor, *, cutoff: int = 32,
                  strength: float = 1.0) -> torch.Tensor:
    """Anchor ``image`` ``[B, 3, H, W]`` in [0, 1] to ``source`` ``[B, 3, h, w]`` (any size).

    Returns float32 ``[B, 3, H, W]`` clamped to [0, 1].
    """
    if image.dim() != 4 or source.dim() != 4 or image.shape[:2] != source.shape[:2]:
        raise PiDInputError(
            f"colour anchoring needs image and source as [B, 3, H, W] with the same batch and "
            f"channels; got {tuple(image.shape)} and {tuple(source.shape)}.")
    if cutoff < 2:
        raise PiDInputError(f"anchor cutoff must be at least 2 px; got {cutoff}.")
    if not 0.0 <= strength <= 1.0:
        raise PiDInputError(f"anchor strength must be in [0, 1]; got {strength}.")
    out = image.float()
    ref = resize_bchw(source.to(out.device).float(), out.shape[-2:])
    delta = low_pass(ref, cutoff) - low_pass(out, cutoff)
    return (out + strength * delta).clamp(0.0, 1.0)
