"""Output-size arithmetic for the nodes: keep the aspect, snap to the multiples PiD needs.

PiD decodes at ``latent size x output_factor`` by default (PID_SPEC §7); a requested long side is
turned into ``(H, W)`` here so the nodes stay free of arithmetic. Sides are multiples of
``multiple`` (16 for a decode, the output factor or 64 for the 2K->4K upscaler so the VAE input
``H / sr_scale`` is a whole number of latent pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PiDInputError


def fit_long_side(hw, long_side: int, multiple: int = 16) -> tuple[int, int]:
    """Scale ``hw = (h, w)`` so its long side is ``long_side``; both sides multiples of ``multiple``."""
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise PiDInputError(f"size {h}x{w} has an empty side.")
    if long_side < multiple:
        raise PiDInputError(f"long side {long_side} px is smaller than the {multiple}-px step PiD needs.")
    scale = long_side / max(h, w)

    def snap(x: float) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    return snap(h * scale), snap(w * scale)


def resize_bchw(x: torch.Tensor, size) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size``: antialiased bicubic when shrinking, bicubic when growing."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    out = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)
    return out.to(x.dtype)


def upscale_sizes(source_hw, long_side: int, sr_scale: int, multiple: int = 64):
    """(output (H, W), VAE input (H, W)) for a 4x PiD upscale of an image of size ``source_hw``.

    The output keeps the source aspect with sides multiples of ``multiple``; the VAE input is the
    output divided by PiD's super-resolution scale.
    """
    out_hw = fit_long_side(source_hw, long_side, multiple)
    if multiple % sr_scale:
        raise PiDInputError(f"snap multiple {multiple} is not divisible by the x{sr_scale} scale.")
    return out_hw, (out_hw[0] // sr_scale, out_hw[1] // sr_scale)
