"""Colour anchoring of an image to a reference (its source, or the VAE decode of its latent):
``out + blur(reference) - blur(out)``, ``blur`` keeping structure coarser than ``cutoff`` px. PiD's
fine detail is untouched; broad colour and brightness follow the reference. Both blurs are taken
on the coarse grid and their difference is upsampled into the image in row strips, so a 16384^2
output needs no full-size temporary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import PiDInputError


def low_pass(x: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Structure of ``[B, C, H, W]`` coarser than ``cutoff`` pixels, at full size."""
    h, w = x.shape[-2:]
    small = (max(1, round(h / cutoff)), max(1, round(w / cutoff)))
    coarse = F.interpolate(x, size=small, mode="area")
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


# Rows of the full-size correction formed at once (bounds the temporary to rows x W x 3).
STRIP_ROWS = 256


def _row_weights(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """``[n_out, n_in]``: the weights ``F.interpolate(..., mode="bicubic")`` gives each input row."""
    eye = torch.eye(n_in, dtype=like.dtype, device=like.device).view(1, n_in, n_in, 1)
    return F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)[0, :, :, 0].T


def add_upsampled_(out: torch.Tensor, coarse: torch.Tensor, strength: float = 1.0,
                   rows: int = STRIP_ROWS) -> torch.Tensor:
    """``out += strength * bicubic_upsample(coarse)`` to ``out``'s size, in strips of ``rows``
    rows: the same values as one ``F.interpolate`` (bicubic is separable) without a full-size
    temporary."""
    height, width = out.shape[-2:]
    cols = F.interpolate(coarse, size=(coarse.shape[-2], width), mode="bicubic", align_corners=False)
    weights = _row_weights(coarse.shape[-2], height, cols)
    for r0 in range(0, height, rows):
        band = weights[r0:r0 + rows]
        used = band.ne(0).any(0).nonzero().flatten()
        lo, hi = int(used.min()), int(used.max()) + 1
        strip = torch.einsum("rk,bckw->bcrw", band[:, lo:hi], cols[:, :, lo:hi])
        out[..., r0:r0 + rows, :].add_(strip, alpha=strength)
    return out


@torch.inference_mode()
def anchor_colors(image: torch.Tensor, source: torch.Tensor, *, cutoff: int = 32,
                  strength: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """Anchor ``image`` ``[B, 3, H, W]`` in [0, 1] to ``source`` ``[B, 3, h, w]`` (any size).

    Returns float32 ``[B, 3, H, W]`` clamped to [0, 1]; ``inplace=True`` (float32 ``image``)
    writes into ``image`` (runs in inference mode, so a decoder's output can be updated in place).
    Memory beyond the image: the coarse grids and one strip of rows.
    """
    if image.dim() != 4 or source.dim() != 4 or image.shape[:2] != source.shape[:2]:
        raise PiDInputError(
            f"colour anchoring needs image and source as [B, 3, H, W] with the same batch and "
            f"channels; got {tuple(image.shape)} and {tuple(source.shape)}.")
    if cutoff < 2:
        raise PiDInputError(f"anchor cutoff must be at least 2 px; got {cutoff}.")
    if not 0.0 <= strength <= 1.0:
        raise PiDInputError(f"anchor strength must be in [0, 1]; got {strength}.")
    out = image if inplace and image.dtype == torch.float32 else image.to(torch.float32, copy=True)
    h, w = out.shape[-2:]
    small = (max(1, round(h / cutoff)), max(1, round(w / cutoff)))
    ref = F.interpolate(source.to(out.device).float(), size=small, mode="area")
    delta = ref - F.interpolate(out, size=small, mode="area")
    return add_upsampled_(out, delta, strength).clamp_(0.0, 1.0)
