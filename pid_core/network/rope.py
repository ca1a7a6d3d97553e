"""Rotary position tables (2-D NTK-aware RoPE for image/pixel tokens, 1-D for text) and the rotation,
as nv-tlabs/PiD @2c8814c ``pid/_src/networks/pixeldit_official.py``: positions span ``linspace(0, 16, n)``
per axis whatever the grid; x and y frequencies interleave per channel pair; each axis has its own
NTK theta. Tables are fp32, made on the tokens' device in each call (a few small kernels, no copy
from the host, nothing cached), so the network call stays one graph under ``torch.compile``.
"""

from __future__ import annotations

import torch

BASE_THETA = 1e4
# apply_rope rotates slices of about this many elements at a time, so its fp32 temporaries stay
# small in eager mode, in at most ROPE_MAX_SLICES slices (elementwise maths: no value changes).
ROPE_SLICE_ELEMENTS = 1 << 24
ROPE_MAX_SLICES = 2


def ntk_theta(n: int, ref: int, head_dim: int, base: float = BASE_THETA) -> float:
    """NTK-aware theta ``base * (n / ref) ** (d_a / (d_a - 2))``, ``d_a = head_dim / 2``."""
    d_a = head_dim / 2
    return base if d_a <= 2 else base * (n / ref) ** (d_a / (d_a - 2))


def rope_2d(h: int, w: int, head_dim: int, ref_grid: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``[h*w, head_dim/2]`` fp32, for a row-major ``h x w`` token grid."""
    exponent = torch.arange(head_dim // 4, dtype=torch.float32, device=device) * 4 / head_dim
    f_y = 1.0 / ntk_theta(h, ref_grid, head_dim) ** exponent
    f_x = 1.0 / ntk_theta(w, ref_grid, head_dim) ** exponent
    ang_x = torch.linspace(0, 16, w, dtype=torch.float32, device=device)[None, :, None] * f_x
    ang_y = torch.linspace(0, 16, h, dtype=torch.float32, device=device)[:, None, None] * f_y
    ang = torch.stack(torch.broadcast_tensors(ang_x, ang_y), dim=-1).reshape(h * w, head_dim // 2)
    return torch.cos(ang), torch.sin(ang)


def rope_1d(n: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``[n, head_dim/2]`` fp32, for text positions ``0..n-1``."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    ang = torch.arange(n, dtype=torch.float32, device=device)[:, None] * freqs[None, :]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2m, 2m+1)`` of ``x [..., N, D]``: ``(a, b) -> (a cos - b sin,
    a sin + b cos)`` in fp32, returned in ``x``'s dtype; over slices of the token axis when large."""
    n = x.shape[-2]
    step = max(1, ROPE_SLICE_ELEMENTS // max(1, x.numel() // max(1, n)), -(-n // ROPE_MAX_SLICES))
    out = None if step >= n else torch.empty_like(x)
    for i in range(0, n, step):
        a, b = x[..., i:i + step, :].float().unflatten(-1, (-1, 2)).unbind(-1)
        c, s = cos[i:i + step], sin[i:i + step]
        part = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2).to(x.dtype)
        if out is None:
            return part
        out[..., i:i + step, :] = part
    return out
