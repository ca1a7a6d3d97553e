"""Building blocks of the PixelDiT-T2I backbone (nv-tlabs/PiD @2c8814c
``pid/_src/networks/pixeldit_official.py``: RMSNorm, MMDiTBlockT2I, PiTBlock, embedders).

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
# A fused qkv output larger than this is produced as three separate GEMMs (peak memory).
QKV_SPLIT_BYTES = 64 << 20


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps)`` in fp32, cast back to the input dtype, times ``weight``."""

    def __init__(self, dim: int, eps: float = NORM_EPS, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm upcasts to fp32 internally and casts back to x's dtype: the same math as
        # ``(x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)`` (bit-identical on CPU, checked
        # in tests), in one fused kernel where the backend has one. The weight multiplies after
        # the cast, as upstream.
        return F.rms_norm(x, (x.shape[-1],), None, self.eps) * self.weight.to(x.dtype)


def _plain_linear(lin: nn.Module, like: torch.Tensor, bias: bool = True) -> bool:
    """True when ``lin`` is a stock Linear whose weight can be sliced and used directly.

    Host layers that cast or offload their weights (ComfyUI's ``comfy.ops``) must run through
    their own ``forward``; for them the fused computation is used instead.
    """
    return (type(lin).forward is nn.Linear.forward and not getattr(lin, "comfy_cast_weights", False)
            and (lin.bias is not None) == bias and lin.weight.device == like.device
            and lin.weight.dtype == like.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The attention every block uses by default: PyTorch's SDPA over ``[B, heads, N, d]`` with the
    ``1/sqrt(d)`` scale and no mask, returned as ``[B, N, heads * d]``. A host may pass another
    function of the same contract (``attention=`` of the blocks and ``network.model.PiDNet``)."""
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


def qkv_heads(lin: nn.Module, q_norm: nn.Module, k_norm: nn.Module, x: torch.Tensor, rope, heads: int):
    """q, k, v ``[B, heads, N, d]`` from a fused qkv Linear; q/k RMS-normed and rotated.

    For a stock Linear and a large input the three projections run as separate GEMMs on row
    slices of its weight (views, no copy), so the fused ``[B, N, 3*dim]`` output never exists
    whole; small inputs (the text stream) keep the one fused GEMM, which is faster; host
    layers (``comfy.ops``) run their own forward.
    """
    cos, sin = rope
    if x.numel() * 3 * x.element_size() > QKV_SPLIT_BYTES and _plain_linear(lin, x, bias=False):
        w = lin.weight.reshape(3, -1, lin.weight.shape[-1])

        def part(j):
            return F.linear(x, w[j]).unflatten(-1, (heads, -1)).transpose(1, 2)

        q = apply_rope(q_norm(part(0)), cos, sin)   # one projection alive at a time
        k = apply_rope(k_norm(part(1)), cos, sin)
        return q, k, part(2)
    q, k, v = lin(x).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
    return apply_rope(q_norm(q), cos, sin), apply_rope(k_norm(k), cos, sin), v


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
        return self.mlp(emb.to(self.mlp[0].bias.dtype))   # bias: plain even in quantised layers


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

    def __init__(self, dim: int, heads: int, dtype=None, device=None, operations=nn, attention=sdpa):
        super().__init__()
        self.heads, self.attention = heads, attention
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

    def forward(self, x, y, rope_x, rope_y):
        qx, kx, vx = qkv_heads(self.qkv_x, self.q_norm_x, self.k_norm_x, x, rope_x, self.heads)
        qy, ky, vy = qkv_heads(self.qkv_y, self.q_norm_y, self.k_norm_y, y, rope_y, self.heads)
        out = self.attention(torch.cat([qy, qx], 2), torch.cat([ky, kx], 2), torch.cat([vy, vx], 2))
        n_txt = y.shape[1]
        return self.proj_x(out[:, n_txt:]), self.proj_y(out[:, :n_txt])


class PatchBlock(nn.Module):
    """MMDiTBlockT2I: joint attention + SwiGLU on the image and text streams."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dtype=None, device=None, operations=nn,
                 attention=sdpa):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.norm_x1 = RMSNorm(dim, **kw)
        self.norm_y1 = RMSNorm(dim, **kw)
        self.attn = JointAttention(dim, heads, operations=operations, attention=attention, **kw)
        self.norm_x2 = RMSNorm(dim, **kw)
        self.norm_y2 = RMSNorm(dim, **kw)
        self.mlp_x = SwiGLU(dim, mlp_hidden, operations=operations, **kw)
        self.mlp_y = SwiGLU(dim, mlp_hidden, operations=operations, **kw)
        self.adaLN_modulation_img = nn.Sequential(operations.Linear(dim, 6 * dim, **kw))
        self.adaLN_modulation_txt = nn.Sequential(operations.Linear(dim, 6 * dim, **kw))

    def forward(self, x, y, c, rope_x, rope_y, update_text: bool = True, chunk: int | None = None):
        """``chunk``: image tokens (summed over the batch) per slice of the MLP; None = all."""
        sx, cx, gx, sx2, cx2, gx2 = self.adaLN_modulation_img(c).chunk(6, dim=-1)
        sy, cy, gy, sy2, cy2, gy2 = self.adaLN_modulation_txt(c).chunk(6, dim=-1)
        ax, ay = self.attn(modulate(self.norm_x1(x), sx, cx), modulate(self.norm_y1(y), sy, cy),
                           rope_x, rope_y)
        x = x + gx * ax
        del ax
        step = x.shape[1] if not chunk else max(1, int(chunk) // x.shape[0])
        if step >= x.shape[1]:
            x = x + gx2 * self.mlp_x(modulate(self.norm_x2(x), sx2, cx2))
        else:  # token-wise, so slicing the token axis changes nothing but the peak memory
            out = x if not torch.is_grad_enabled() else torch.empty_like(x)  # x is ours: reuse it
            for i in range(0, x.shape[1], step):
                xs = x[:, i:i + step]
                out[:, i:i + step] = xs + gx2 * self.mlp_x(modulate(self.norm_x2(xs), sx2, cx2))
            x = out
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

    def __init__(self, dim: int, heads: int, dtype=None, device=None, operations=nn, attention=sdpa):
        super().__init__()
        self.heads, self.attention = heads, attention
        kw = dict(dtype=dtype, device=device)
        self.qkv = operations.Linear(dim, 3 * dim, bias=False, **kw)
        self.q_norm = RMSNorm(dim // heads, **kw)
        self.k_norm = RMSNorm(dim // heads, **kw)
        self.proj = operations.Linear(dim, dim, **kw)

    def forward(self, x, rope):
        q, k, v = qkv_heads(self.qkv, self.q_norm, self.k_norm, x, rope, self.heads)
        return self.proj(self.attention(q, k, v))


class PixelBlock(nn.Module):
    """PiTBlock: per-pixel adaLN (modulation per in-patch pixel), attention across patches.

    The per-pixel modulation ``[B*L, P^2, 6*D]`` is the largest activation of the network
    (96 values per output pixel), so the block never materialises it whole: the patch tokens
    are processed in slices of ``chunk`` rows, before attention with only the (shift1, scale1)
    rows of the fused ``adaLN_modulation.0`` Linear and after it with the other four chunks
    (row slices of the same weight, so nothing is computed twice and the state dict is
    unchanged). With a single slice the fused Linear runs once, as upstream. Every op outside
    the attention is row-wise, so the slicing does not change the maths (only, at most, the
    last bit of a GEMM's rounding).
    """

    def __init__(self, cond_dim: int, pixel_dim: int, attn_dim: int, heads: int, p2: int,
                 mlp_hidden: int, dtype=None, device=None, operations=nn, attention=sdpa):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.pixel_dim, self.p2 = pixel_dim, p2
        self.compress_to_attn = operations.Linear(p2 * pixel_dim, attn_dim, **kw)
        self.expand_from_attn = operations.Linear(attn_dim, p2 * pixel_dim, **kw)
        self.norm1 = RMSNorm(pixel_dim, **kw)
        self.attn = PixelAttention(attn_dim, heads, operations=operations, attention=attention, **kw)
        self.norm2 = RMSNorm(pixel_dim, **kw)
        self.mlp = PixelMLP(pixel_dim, mlp_hidden, operations=operations, **kw)
        self.adaLN_modulation = nn.Sequential(operations.Linear(cond_dim, 6 * p2 * pixel_dim, **kw))

    def _split_modulation(self, like: torch.Tensor):
        """Row slices of the fused adaLN Linear: ((W, b) for chunks 0-1, (W, b) for chunks 2-5),
        used when the tokens are processed in several slices (together one copy of the weight).

        Output feature ``p*6*D + j*D + d`` (pixel p, chunk j, channel d; upstream PiTBlock), so chunk
        group ``j0:j1`` is ``weight.view(P^2, 6, D, -1)[:, j0:j1]``. None for host layers.
        """
        lin = self.adaLN_modulation[0]
        if not _plain_linear(lin, like):
            return None
        d, p2 = self.pixel_dim, self.p2
        w = lin.weight.reshape(p2, 6, d, -1)
        b = lin.bias.reshape(p2, 6, d)
        return ((w[:, :2].reshape(p2 * 2 * d, -1), b[:, :2].reshape(-1)),
                (w[:, 2:].reshape(p2 * 4 * d, -1), b[:, 2:].reshape(-1)))

    def _mod(self, s: torch.Tensor, split, first: bool) -> tuple[torch.Tensor, ...]:
        """(shift1, scale1) if ``first`` else (gate1, shift2, scale2, gate2), each ``[n, P^2, D]``."""
        d, p2 = self.pixel_dim, self.p2
        if split is not None:
            w, b = split[0] if first else split[1]
            return F.linear(s, w, b).view(-1, p2, 2 if first else 4, d).unbind(2)
        m = self.adaLN_modulation(s).view(-1, p2, 6, d)
        return m[:, :, :2].unbind(2) if first else m[:, :, 2:].unbind(2)

    def forward(self, p: torch.Tensor, s_cond: torch.Tensor, batch: int, rope, chunk=None,
                inplace: bool = False):
        """``p [B*L, P^2, D]``, ``s_cond [B*L, C]``; ``chunk`` rows per slice (None = all).

        ``inplace=True`` lets the block overwrite ``p`` (the caller's pixel stream) when
        autograd is off, saving one copy of the largest tensor.
        """
        n = p.shape[0]
        step = n if not chunk or chunk >= n else max(1, int(chunk))
        whole = split = None
        if step == n:  # one slice: the fused Linear once, both halves from it (no weight copy)
            m = self.adaLN_modulation(s_cond).view(-1, self.p2, 6, self.pixel_dim)
            whole = (m[:, :, :2].unbind(2), m[:, :, 2:].unbind(2))
        else:
            split = self._split_modulation(s_cond)
        compressed = None
        for i in range(0, n, step):
            sh1, sc1 = whole[0] if whole else self._mod(s_cond[i:i + step], split, first=True)
            c = self.compress_to_attn(modulate(self.norm1(p[i:i + step]), sh1, sc1).flatten(1))
            if step == n:
                compressed = c
                break
            if compressed is None:
                compressed = c.new_empty((n, c.shape[1]))
            compressed[i:i + step] = c
        del c, sh1, sc1
        a = self.attn(compressed.view(batch, n // batch, -1), rope).flatten(0, 1)
        del compressed
        out = None
        for i in range(0, n, step):
            g1, sh2, sc2, g2 = whole[1] if whole else self._mod(s_cond[i:i + step], split, first=False)
            q = p[i:i + step] + g1 * self.expand_from_attn(a[i:i + step]).view(-1, self.p2, self.pixel_dim)
            q = q + g2 * self.mlp(modulate(self.norm2(q), sh2, sc2))
            if step == n:
                return q
            if out is None:
                out = p if inplace and not torch.is_grad_enabled() else torch.empty_like(p)
            out[i:i + step] = q
        return out


class FinalLayer(nn.Module):
    def __init__(self, pixel_dim: int, out_channels: int, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm = RMSNorm(pixel_dim, dtype=dtype, device=device)
        self.linear = operations.Linear(pixel_dim, out_channels, dtype=dtype, device=device)

    def forward(self, p, chunk=None):
        """``p [N, P^2, D] -> [N, P^2, out]``, in slices of ``chunk`` rows (None = all)."""
        n = p.shape[0]
        if not chunk or chunk >= n:
            return self.linear(self.norm(p))
        out = None
        for i in range(0, n, int(chunk)):
            o = self.linear(self.norm(p[i:i + int(chunk)]))
            if out is None:
                out = o.new_empty((n,) + o.shape[1:])
            out[i:i + int(chunk)] = o
        return out
