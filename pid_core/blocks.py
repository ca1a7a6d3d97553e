"""Building blocks of the PixelDiT-T2I backbone (PID_SPEC 1.2 - 1.5).

Module attribute names mirror the upstream state-dict keys exactly, so ``state_dict()`` of our
network is the upstream layout. Every layer takes ``dtype``, ``device`` and an ``operations``
namespace (default ``torch.nn``) so a host can inject its own Linear/Conv2d/GroupNorm classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

NORM_EPS = 1e-6


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps)`` in fp32, cast back to the input dtype, times ``weight``."""

    def __init__(self, dim: int, eps: float = NORM_EPS, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA over ``[B, heads, N, d]`` with the default ``1/sqrt(d)`` scale, no mask."""
    return F.scaled_dot_product_attention(q, k, v)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding with max_period 10 (cos first) -> Linear-SiLU-Linear."""

    FREQ_DIM = 256
    MAX_PERIOD = 10.0

    def __init__(self, hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.mlp = nn.Sequential(
            operations.Linear(self.FREQ_DIM, hidden, dtype=dtype, device=device),
            nn.SiLU(),
            operations.Linear(hidden, hidden, dtype=dtype, device=device),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.FREQ_DIM // 2
        freqs = torch.exp(-math.log(self.MAX_PERIOD)
                          * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        arg = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class TextEmbedder(nn.Module):
    """Gemma features -> hidden: Linear then RMSNorm (positional table added by the net)."""

    def __init__(self, text_dim: int, hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.proj = operations.Linear(text_dim, hidden, dtype=dtype, device=device)
        self.norm = RMSNorm(hidden, dtype=dtype, device=device)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(y))


class LinearEmbedder(nn.Module):
    """A bare ``proj`` Linear (patch and pixel embedders)."""

    def __init__(self, in_dim: int, out_dim: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.proj = operations.Linear(in_dim, out_dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.w1 = operations.Linear(dim, hidden, bias=False, dtype=dtype, device=device)
        self.w3 = operations.Linear(dim, hidden, bias=False, dtype=dtype, device=device)
        self.w2 = operations.Linear(hidden, dim, bias=False, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class JointAttention(nn.Module):
    """MMDiT attention over ``[text, image]`` with per-stream q/k RMSNorm and RoPE."""

    def __init__(self, dim: int, heads: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.heads = heads
        hd = dim // heads
        kw = dict(dtype=dtype, device=device)
        self.qkv_x = operations.Linear(dim, 3 * dim, bias=False, **kw)
        self.qkv_y = operations.Linear(dim, 3 * dim, bias=False, **kw)
        self.q_norm_x = RMSNorm(hd, **kw)
        self.k_norm_x = RMSNorm(hd, **kw)
        self.q_norm_y = RMSNorm(hd, **kw)
        self.k_norm_y = RMSNorm(hd, **kw)
        self.proj_x = operations.Linear(dim, dim, **kw)
        self.proj_y = operations.Linear(dim, dim, **kw)

    def _qkv(self, lin, qn, kn, x, rope):
        q, k, v = lin(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        cos, sin = rope
        return apply_rope(qn(q), cos, sin), apply_rope(kn(k), cos, sin), v

    def forward(self, x, y, rope_x, rope_y):
        qx, kx, vx = self._qkv(self.qkv_x, self.q_norm_x, self.k_norm_x, x, rope_x)
        qy, ky, vy = self._qkv(self.qkv_y, self.q_norm_y, self.k_norm_y, y, rope_y)
        out = attention(torch.cat([qy, qx], 2), torch.cat([ky, kx], 2), torch.cat([vy, vx], 2))
        out = out.transpose(1, 2).flatten(2)
        n_txt = y.shape[1]
        return self.proj_x(out[:, n_txt:]), self.proj_y(out[:, :n_txt])


class PatchBlock(nn.Module):
    """MMDiTBlockT2I: joint attention + SwiGLU on the image and text streams."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.norm_x1 = RMSNorm(dim, **kw)
        self.norm_y1 = RMSNorm(dim, **kw)
        self.attn = JointAttention(dim, heads, operations=operations, **kw)
        self.norm_x2 = RMSNorm(dim, **kw)
        self.norm_y2 = RMSNorm(dim, **kw)
        self.mlp_x = SwiGLU(dim, mlp_hidden, operations=operations, **kw)
        self.mlp_y = SwiGLU(dim, mlp_hidden, operations=operations, **kw)
        self.adaLN_modulation_img = nn.Sequential(operations.Linear(dim, 6 * dim, **kw))
        self.adaLN_modulation_txt = nn.Sequential(operations.Linear(dim, 6 * dim, **kw))

    def forward(self, x, y, c, rope_x, rope_y, update_text: bool = True):
        sx, cx, gx, sx2, cx2, gx2 = self.adaLN_modulation_img(c).chunk(6, dim=-1)
        sy, cy, gy, sy2, cy2, gy2 = self.adaLN_modulation_txt(c).chunk(6, dim=-1)
        ax, ay = self.attn(modulate(self.norm_x1(x), sx, cx), modulate(self.norm_y1(y), sy, cy),
                           rope_x, rope_y)
        x = x + gx * ax
        x = x + gx2 * self.mlp_x(modulate(self.norm_x2(x), sx2, cx2))
        if update_text:  # the last block's text output is never consumed
            y = y + gy * ay
            y = y + gy2 * self.mlp_y(modulate(self.norm_y2(y), sy2, cy2))
        return x, y


class PixelMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden, dtype=dtype, device=device)
        self.fc2 = operations.Linear(hidden, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class PixelAttention(nn.Module):
    """Self-attention across patch tokens inside a pixel block."""

    def __init__(self, dim: int, heads: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.heads = heads
        kw = dict(dtype=dtype, device=device)
        self.qkv = operations.Linear(dim, 3 * dim, bias=False, **kw)
        self.q_norm = RMSNorm(dim // heads, **kw)
        self.k_norm = RMSNorm(dim // heads, **kw)
        self.proj = operations.Linear(dim, dim, **kw)

    def forward(self, x, rope):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        cos, sin = rope
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        return self.proj(attention(q, k, v).transpose(1, 2).flatten(2))


class PixelBlock(nn.Module):
    """PiTBlock: per-pixel adaLN (modulation per in-patch pixel), attention across patches.

    The per-pixel modulation ``[B*L, P^2, 6*D]`` is the largest activation of the network, so the
    token-wise parts run in chunks of ``chunk`` patch tokens (None = all at once); results are
    identical because every op in them is row-wise.
    """

    def __init__(self, cond_dim: int, pixel_dim: int, attn_dim: int, heads: int, p2: int,
                 mlp_hidden: int, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.pixel_dim, self.p2 = pixel_dim, p2
        self.compress_to_attn = operations.Linear(p2 * pixel_dim, attn_dim, **kw)
        self.expand_from_attn = operations.Linear(attn_dim, p2 * pixel_dim, **kw)
        self.norm1 = RMSNorm(pixel_dim, **kw)
        self.attn = PixelAttention(attn_dim, heads, operations=operations, **kw)
        self.norm2 = RMSNorm(pixel_dim, **kw)
        self.mlp = PixelMLP(pixel_dim, mlp_hidden, operations=operations, **kw)
        self.adaLN_modulation = nn.Sequential(operations.Linear(cond_dim, 6 * p2 * pixel_dim, **kw))

    def _modulation(self, s_cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.adaLN_modulation(s_cond).view(-1, self.p2, 6 * self.pixel_dim)
        return m.chunk(6, dim=-1)

    def forward(self, p: torch.Tensor, s_cond: torch.Tensor, batch: int, rope, chunk=None):
        n = p.shape[0]
        step = n if not chunk or chunk >= n else max(1, int(chunk))
        whole = self._modulation(s_cond) if step == n else None  # one pass: keep it for both halves
        compressed = []
        for i in range(0, n, step):
            sh1, sc1 = (whole or self._modulation(s_cond[i:i + step]))[:2]
            h = modulate(self.norm1(p[i:i + step]), sh1, sc1)
            compressed.append(self.compress_to_attn(h.flatten(1)))
        a = self.attn(torch.cat(compressed).view(batch, n // batch, -1), rope).flatten(0, 1)
        out = []
        for i in range(0, n, step):
            _, _, g1, sh2, sc2, g2 = whole or self._modulation(s_cond[i:i + step])
            upd = self.expand_from_attn(a[i:i + step]).view(-1, self.p2, self.pixel_dim)
            q = p[i:i + step] + g1 * upd
            out.append(q + g2 * self.mlp(modulate(self.norm2(q), sh2, sc2)))
        return torch.cat(out) if len(out) > 1 else out[0]


class FinalLayer(nn.Module):
    def __init__(self, pixel_dim: int, out_channels: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm = RMSNorm(pixel_dim, dtype=dtype, device=device)
        self.linear = operations.Linear(pixel_dim, out_channels, dtype=dtype, device=device)

    def forward(self, p):
        return self.linear(self.norm(p))
