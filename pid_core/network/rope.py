"""Rotary position tables: 2-D NTK-aware RoPE for image/pixel tokens, 1-D RoPE for text.

Facts (nv-tlabs/PiD @2c8814c ``pid/_src/networks/pixeldit_official.py``): positions span
``linspace(0, 16, n)`` per axis whatever the grid size; x and y frequencies are interleaved per
channel pair; each axis gets its own NTK-scaled theta
``1e4 * (n / ref) ** (d_a / (d_a - 2))`` with ``d_a = head_dim / 2``. Tables are fp32 and cached per
(grid, head_dim, ref, device) because they depend on nothing else.
"""

from __future__ import annotations

import functools

import torch

BASE_THETA = 1e4


def ntk_theta(n: int, ref: int, head_dim: int, base: float = BASE_THETA) -> float:
    """NTK-aware theta for an axis of ``n`` positions against a reference of ``ref`` positions."""
    d_a = head_dim / 2
    if d_a <= 2:
        return base
    return base * (n / ref) ** (d_a / (d_a - 2))


@functools.lru_cache(maxsize=64)
def _angles_2d_cpu(h: int, w: int, head_dim: int, ref: int) -> torch.Tensor:
    n_freq = head_dim // 4
    exponent = torch.arange(n_freq, dtype=torch.float32) * 4 / head_dim
    f_y = 1.0 / ntk_theta(h, ref, head_dim) ** exponent
    f_x = 1.0 / ntk_theta(w, ref, head_dim) ** exponent
    ys = torch.linspace(0, 16, h, dtype=torch.float32)
    xs = torch.linspace(0, 16, w, dtype=torch.float32)
    ang_x = xs[None, :, None] * f_x            # [1, w, n_freq]
    ang_y = ys[:, None, None] * f_y            # [h, 1, n_freq]
    ang = torch.stack(torch.broadcast_tensors(ang_x, ang_y), dim=-1)  # [h, w, n_freq, 2]
    return ang.reshape(h * w, head_dim // 2)


@functools.lru_cache(maxsize=64)
def _angles_1d_cpu(n: int, head_dim: int, theta: float) -> torch.Tensor:
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    return torch.arange(n, dtype=torch.float32)[:, None] * freqs[None, :]


@functools.lru_cache(maxsize=16)  # device tensors: keep few (a 4096^2 table pair is 16 MB)
def _cos_sin(kind: str, key: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ang = _angles_2d_cpu(*key) if kind == "2d" else _angles_1d_cpu(*key)
    ang = ang.to(device)
    return torch.cos(ang), torch.sin(ang)


def rope_2d(h: int, w: int, head_dim: int, ref_grid: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``[h*w, head_dim/2]`` fp32, for a row-major ``h x w`` token grid."""
    return _cos_sin("2d", (h, w, head_dim, ref_grid), torch.device(device))


def rope_1d(n: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``[n, head_dim/2]`` fp32, for text positions ``0..n-1``."""
    return _cos_sin("1d", (n, head_dim, float(theta)), torch.device(device))


# apply_rope works on slices of about this many elements: its fp32 temporaries stay small
# (elementwise maths, so the slicing changes no value).
ROPE_SLICE_ELEMENTS = 1 << 24


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> None:
    xf = x.float()
    a, b = xf[..., 0::2], xf[..., 1::2]
    rot = torch.empty_like(xf)
    even, odd = rot[..., 0::2], rot[..., 1::2]
    torch.mul(a, cos, out=even)
    even.sub_(b * sin)
    torch.mul(a, sin, out=odd)
    odd.add_(b * cos)
    out.copy_(rot)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2m, 2m+1)`` of ``x [..., N, D]`` by angle m; fp32 math, input dtype out.

    ``(a, b) -> (a cos - b sin, a sin + b cos)`` as upstream, computed over slices of the token
    axis so the fp32 temporaries stay bounded (they were the peak of a 4096^2 forward).
    """
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.shape[-2]
    step = max(1, ROPE_SLICE_ELEMENTS // max(1, x.numel() // max(1, n)))
    for i in range(0, n, step):
        _rotate(x[..., i:i + step, :], cos[i:i + step], sin[i:i + step], out[..., i:i + step, :])
    return out


def clear_cache() -> None:
    """Drop cached tables (e.g. after moving to another device for good)."""
    for fn in (_angles_2d_cpu, _angles_1d_cpu, _cos_sin):
        fn.cache_clear()


__all__ = ["ntk_theta", "rope_2d", "rope_1d", "apply_rope", "clear_cache"]
