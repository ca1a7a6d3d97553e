"""The latent adapter and its sigma-aware gates (nv-tlabs/PiD @2c8814c
``pid/_src/networks/lq_projection_2d.py``, ``LQProjection2D``).

The adapter turns the normalised LDM latent into one feature map per injection point. It owns
its API in three stages, because its output depends only on the latent and the patch grid:
``align`` (unpatchify + resample to the patch grid), ``trunk`` (the conv stack) and ``tokens``
(the shared ``[B, L, hid]`` features, computed once per decode, or per tile on a crop), then
``head(tokens, k)`` right before gate k at every step. ``forward`` is the upstream call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GN_GROUPS = 4
GN_EPS = 1e-5


def unpatchify_latent(z: torch.Tensor, f: int) -> torch.Tensor:
    """``[B, C, h, w] -> [B, C/f^2, f*h, f*w]``; channel ``c*f^2 + a*f + b`` -> pixel ``(f*i+a, f*j+b)``."""
    if f == 1:
        return z
    b, c, h, w = z.shape
    return z.view(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // (f * f), h * f, w * f)


def align_to_grid(z: torch.Tensor, grid: tuple[int, int], ratio: float) -> torch.Tensor:
    """Resample the conv input to the patch grid: nearest when the grid is finer (all releases)."""
    if ratio > 1:
        return F.interpolate(z, size=grid, mode="nearest")
    if ratio == 1:
        if tuple(z.shape[-2:]) == tuple(grid):
            return z
        return F.interpolate(z, size=grid, mode="bilinear", align_corners=False)
    raise NotImplementedError("latent-to-patch ratios below 1 are not used by any released PiD net")


def tokens_of(trunk: torch.Tensor) -> torch.Tensor:
    """Trunk output ``[B, hid, h, w] -> [B, h*w, hid]`` (row-major, as the patch tokens), contiguous."""
    return trunk.flatten(2).transpose(1, 2).contiguous()


class ResBlock(nn.Module):
    def __init__(self, dim: int, padding_mode: str, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        conv = dict(kernel_size=3, padding=1, padding_mode=padding_mode, **kw)
        self.block = nn.Sequential(
            operations.GroupNorm(GN_GROUPS, dim, eps=GN_EPS, **kw), nn.SiLU(),
            operations.Conv2d(dim, dim, **conv),
            operations.GroupNorm(GN_GROUPS, dim, eps=GN_EPS, **kw), nn.SiLU(),
            operations.Conv2d(dim, dim, **conv),
        )

    def forward(self, x):
        return x + self.block(x)


class SigmaGate(nn.Module):
    """``x + sigmoid(Linear([x, lq]) - exp(log_alpha) * sigma) * lq``.

    ``per_dim`` selects one gate per channel (v1 nets) or one scalar per token (v1.5 nets).
    """

    def __init__(self, dim: int, per_dim: bool, dtype=None, device=None, operations=nn):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros((), dtype=dtype, device=device))
        self.content_proj = operations.Linear(2 * dim, dim if per_dim else 1, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, lq: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        logit = self.content_proj(torch.cat([x, lq], dim=-1))
        g = torch.sigmoid(logit - self.log_alpha.float().exp() * sigma.float().view(-1, 1, 1))
        return x + (g * lq).to(x.dtype)


class LatentAdapter(nn.Module):
    """Conv stack over the (unpatchified, grid-aligned) latent + one Linear head per injection."""

    def __init__(self, cfg, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        hid, pad = cfg.adapter_dim, cfg.conv_padding
        conv = dict(kernel_size=3, padding=1, padding_mode=pad, **kw)
        self.unpatchify = cfg.unpatchify
        self.ratio = cfg.sr_scale * (cfg.latent_down / cfg.unpatchify) / cfg.patch_size
        self.latent_proj = nn.Sequential(
            operations.Conv2d(cfg.adapter_in_channels, hid, **conv), nn.SiLU(),
            operations.Conv2d(hid, hid, **conv),
            *[ResBlock(hid, pad, operations=operations, **kw) for _ in range(cfg.adapter_res_blocks)],
        )
        self.output_heads = nn.ModuleList(
            operations.Linear(hid, cfg.hidden_size, **kw) for _ in range(cfg.num_injections))
        self.gate_modules = nn.ModuleList(
            SigmaGate(cfg.hidden_size, cfg.gate_per_dim, operations=operations, **kw)
            for _ in range(cfg.num_injections))
        self.pit_head = operations.Linear(hid, cfg.hidden_size, **kw) if cfg.pit_gate else None

    @property
    def receptive_radius(self) -> int:
        """Cells of context the trunk reads around each output cell (one per 3x3 conv)."""
        return sum(isinstance(m, nn.Conv2d) for m in self.latent_proj.modules())

    @property
    def n_heads(self) -> int:
        """Outputs per decode: one per injection (+ the PiT feature, last, for v1.5 nets)."""
        return len(self.output_heads) + (self.pit_head is not None)

    def align(self, z: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The latent unpatchified and resampled to the patch grid: ``[B, C', Hs, Ws]``."""
        z = unpatchify_latent(z.to(self.latent_proj[0].weight.dtype), self.unpatchify)
        return align_to_grid(z, grid, self.ratio)

    def encode(self, z: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The shared features ``[B, L, hid]`` of a whole latent: the conv trunk (``latent_proj``) on
        the aligned latent, as row-major tokens like the patch tokens."""
        return tokens_of(self.latent_proj(self.align(z, grid)))

    def head(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Output ``k`` ``[B, L, hidden]``: injection k, or the PiT feature for ``k = n_heads - 1``
        on v1.5 nets."""
        return self.output_heads[k](tokens) if k < len(self.output_heads) else self.pit_head(tokens)

    def forward(self, z: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Every output ``[B, Hs*Ws, hidden]``, in injection order (+ the PiT feature last)."""
        tokens = self.encode(z, grid)
        return [self.head(tokens, k) for k in range(self.n_heads)]
