"""PiDNet: PixelDiT-T2I backbone + latent adapter (nv-tlabs/PiD @2c8814c
``pid/_src/networks/pid_net.py``, ``PidNet``).

``forward(x, t, y, lq_latent, sigma)`` is the upstream call and returns the velocity
``v = eps - x0`` in pixel space. For sampling, the adapter's shared features are computed once
per decode (``net.lq_proj.encode``) and ``velocity(x, t, y, tokens, sigma, chunk)`` runs one step
on them: each adapter head runs right before its gate and is freed after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import LatentAdapter, SigmaGate
from .blocks import FinalLayer, LinearEmbedder, PatchBlock, PixelBlock, TextEmbedder, TimestepEmbedder, sdpa
from .config import PiDNetConfig
from .rope import rope_1d, rope_2d

# The patch-block SwiGLU keeps ~4x fewer values per token than a pixel block's per-pixel work,
# so its slices are this many times longer than ``chunk`` (fewer, larger GEMMs).
PATCH_MLP_CHUNK_FACTOR = 4


def _sincos_axis(n: int, dim: int, device, dtype) -> torch.Tensor:
    """1-D sin-cos code ``[n, dim/2]`` of positions 0..n-1 (float64 maths, then ``dtype``)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    arg = torch.arange(n, dtype=torch.float64, device=device)[:, None] * omega[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1).to(dtype)


def pixel_position_table(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """Absolute 2-D sin-cos table ``[h, w, dim]``: first half encodes the column, second the row."""
    cols, rows = _sincos_axis(w, dim, device, dtype), _sincos_axis(h, dim, device, dtype)
    return torch.cat([cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)], dim=-1)


def add_pixel_positions_(tok: torch.Tensor) -> torch.Tensor:
    """``tok [B, h, w, dim] += pixel_position_table(h, w, dim)`` in place, without the table.

    The table is separable (columns in the first half, rows in the second), so adding the two
    1-D codes by broadcasting gives the same values as adding the materialised table, which
    would otherwise cost ``h*w*dim`` float64 values (2 GiB at 4096 x 4096).
    """
    _, h, w, dim = tok.shape
    half = dim // 2
    tok[..., :half] += _sincos_axis(w, dim, tok.device, tok.dtype)
    tok[..., half:] += _sincos_axis(h, dim, tok.device, tok.dtype)[:, None]
    return tok


class PiDNet(nn.Module):
    def __init__(self, cfg: PiDNetConfig, dtype=None, device=None, operations=nn, attention=sdpa):
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
            PatchBlock(h, cfg.num_heads, cfg.mlp_hidden, attention=attention, **kw) for _ in range(cfg.patch_depth))
        self.pixel_blocks = nn.ModuleList(
            PixelBlock(h, cfg.pixel_dim, cfg.pixel_attn_dim, cfg.pixel_heads, p * p,
                       cfg.pixel_mlp_hidden, attention=attention, **kw) for _ in range(cfg.pixel_depth))
        self.final_layer = FinalLayer(cfg.pixel_dim, 3, **kw)
        self.lq_proj = LatentAdapter(cfg, **kw)
        self.pit_lq_gate = SigmaGate(h, cfg.gate_per_dim, **kw) if cfg.pit_gate else None

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (of a plain parameter: host layers may store weights quantised)."""
        return self.y_pos_embedding.dtype

    def grid_for(self, x: torch.Tensor) -> tuple[int, int]:
        p = self.cfg.patch_size
        return x.shape[-2] // p, x.shape[-1] // p

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.cfg.patch_size
        return x.view(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)

    def _pixel_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        p, d = self.cfg.patch_size, self.cfg.pixel_dim
        tok = add_pixel_positions_(self.pixel_embedder(x.permute(0, 2, 3, 1)))
        tok = tok.view(b, hh // p, p, ww // p, p, d).permute(0, 1, 3, 2, 4, 5)
        return tok.reshape(-1, p * p, d)

    def _unpatchify(self, out: torch.Tensor, b: int, hh: int, ww: int) -> torch.Tensor:
        p = self.cfg.patch_size
        out = out.view(b, hh // p, ww // p, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, -1, hh, ww)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x, t, y, lq_latent, sigma):
        return self.velocity(x, t, y, self.lq_proj.encode(lq_latent, self.grid_for(x)), sigma)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, tokens: torch.Tensor,
                 sigma: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """One network call on the adapter's shared features ``tokens`` (``lq_proj.encode``).

        ``chunk`` bounds the rows per slice of the token-wise work (pixel blocks, final layer,
        patch MLPs x4; see blocks.py); None = all at once.
        """
        cfg, adapter = self.cfg, self.lq_proj
        b, _, hh, ww = x.shape
        gh, gw, dev, wdtype = hh // cfg.patch_size, ww // cfg.patch_size, x.device, self.y_pos_embedding.dtype
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
        mlp_chunk = None if not chunk else PATCH_MLP_CHUNK_FACTOR * int(chunk)
        for i, block in enumerate(self.patch_blocks):
            if i % cfg.inject_interval == 0:
                k = i // cfg.inject_interval
                s = adapter.gate_modules[k](s, adapter.head(tokens, k), sigma)
            s, y_emb = block(s, y_emb, c, rope_img, rope_txt, update_text=i != last, chunk=mlp_chunk)
        del y_emb
        s = F.silu(t_emb + s)
        if self.pit_lq_gate is not None:
            s = self.pit_lq_gate(s, adapter.head(tokens, len(adapter.output_heads)), sigma)
        s_cond = s.reshape(b * gh * gw, -1)
        del s

        p = self._pixel_tokens(x)
        del x
        rope_pix = rope_2d(gh, gw, cfg.pixel_head_dim, cfg.rope_ref_grid, dev)
        for block in self.pixel_blocks:
            p = block(p, s_cond, b, rope_pix, chunk=chunk, inplace=True)
        return self._unpatchify(self.final_layer(p, chunk=chunk), b, hh, ww)
