"""PiDNet: PixelDiT-T2I backbone + latent adapter (PID_SPEC 1.1).

``forward(x, t, y, lq_latent, sigma)`` returns the velocity ``v = eps - x0`` in pixel space.
For sampling, ``adapter_features`` runs the latent branch once and ``forward_with_features`` reuses
it at every step (the adapter depends only on the latent and the output grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import LatentAdapter, SigmaGate
from .blocks import FinalLayer, LinearEmbedder, PatchBlock, PixelBlock, TextEmbedder, TimestepEmbedder
from .config import PiDNetConfig
from .rope import rope_1d, rope_2d


def pixel_position_table(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """Absolute 2-D sin-cos table ``[h, w, dim]``: first half encodes the column, second the row."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def axis(n):
        arg = torch.arange(n, dtype=torch.float64, device=device)[:, None] * omega[None]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)       # [n, dim/2]

    cols, rows = axis(w), axis(h)
    table = torch.cat([cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)], dim=-1)
    return table.to(dtype)


class PiDNet(nn.Module):
    def __init__(self, cfg: PiDNetConfig, dtype=None, device=None, operations=nn):
        super().__init__()
        self.cfg = cfg
        kw = dict(dtype=dtype, device=device, operations=operations)
        h, p = cfg.hidden_size, cfg.patch_size
        self.y_pos_embedding = nn.Parameter(torch.zeros(1, cfg.text_tokens, h, dtype=dtype, device=device))
        self.pixel_embedder = LinearEmbedder(3, cfg.pixel_dim, **kw)
        self.s_embedder = LinearEmbedder(3 * p * p, h, **kw)
        self.t_embedder = TimestepEmbedder(h, **kw)
        self.y_embedder = TextEmbedder(cfg.text_dim, h, **kw)
        self.patch_blocks = nn.ModuleList(
            PatchBlock(h, cfg.num_heads, cfg.mlp_hidden, **kw) for _ in range(cfg.patch_depth))
        self.pixel_blocks = nn.ModuleList(
            PixelBlock(h, cfg.pixel_dim, cfg.pixel_attn_dim, cfg.pixel_heads, p * p,
                       cfg.pixel_mlp_hidden, **kw) for _ in range(cfg.pixel_depth))
        self.final_layer = FinalLayer(cfg.pixel_dim, 3, **kw)
        self.lq_proj = LatentAdapter(cfg, **kw)
        self.pit_lq_gate = SigmaGate(h, cfg.gate_per_dim, **kw) if cfg.pit_gate else None
        self.pixel_chunk: int | None = None   # patch tokens per chunk in pixel blocks (None = all)

    # -- pieces -------------------------------------------------------------------------------
    def grid_for(self, x: torch.Tensor) -> tuple[int, int]:
        p = self.cfg.patch_size
        return x.shape[-2] // p, x.shape[-1] // p

    def adapter_features(self, lq_latent: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        return self.lq_proj(lq_latent, grid)

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.cfg.patch_size
        return x.view(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)

    def _pixel_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        p, d = self.cfg.patch_size, self.cfg.pixel_dim
        tok = self.pixel_embedder(x.permute(0, 2, 3, 1))
        tok = tok + pixel_position_table(hh, ww, d, x.device, tok.dtype)
        tok = tok.view(b, hh // p, p, ww // p, p, d).permute(0, 1, 3, 2, 4, 5)
        return tok.reshape(-1, p * p, d)

    def _unpatchify(self, out: torch.Tensor, b: int, hh: int, ww: int) -> torch.Tensor:
        p = self.cfg.patch_size
        out = out.view(b, hh // p, ww // p, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, -1, hh, ww)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x, t, y, lq_latent, sigma):
        feats = self.adapter_features(lq_latent, self.grid_for(x))
        return self.forward_with_features(x, t, y, feats, sigma)

    def forward_with_features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                              feats: list[torch.Tensor], sigma: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        b, _, hh, ww = x.shape
        gh, gw = self.grid_for(x)
        dev = x.device
        wdtype = self.s_embedder.proj.weight.dtype
        x = x.to(wdtype)
        sigma = sigma.float().reshape(-1).expand(b) if sigma.numel() == 1 else sigma.float()

        t_emb = self.t_embedder(t.reshape(-1).expand(b) if t.numel() == 1 else t).unsqueeze(1)
        n_txt = min(y.shape[1], cfg.text_tokens)
        y_emb = self.y_embedder(y[:, :n_txt].to(wdtype)) + self.y_pos_embedding[:, :n_txt]
        c = F.silu(t_emb)
        rope_img = rope_2d(gh, gw, cfg.head_dim, cfg.rope_ref_grid, dev)
        rope_txt = rope_1d(n_txt, cfg.head_dim, cfg.text_rope_theta, dev)

        s = self.s_embedder(self._patchify(x))
        last = len(self.patch_blocks) - 1
        for i, block in enumerate(self.patch_blocks):
            if i % cfg.inject_interval == 0:
                k = i // cfg.inject_interval
                s = self.lq_proj.gate_modules[k](s, feats[k], sigma)
            s, y_emb = block(s, y_emb, c, rope_img, rope_txt, update_text=i != last)
        s = F.silu(t_emb + s)
        if self.pit_lq_gate is not None:
            s = self.pit_lq_gate(s, feats[-1], sigma)
        s_cond = s.reshape(b * gh * gw, -1)

        p = self._pixel_tokens(x)
        rope_pix = rope_2d(gh, gw, cfg.pixel_head_dim, cfg.rope_ref_grid, dev)
        for block in self.pixel_blocks:
            p = block(p, s_cond, b, rope_pix, chunk=self.pixel_chunk)
        return self._unpatchify(self.final_layer(p), b, hh, ww)
