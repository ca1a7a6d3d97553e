"""PiDNet: PixelDiT-T2I backbone + latent adapter (PID_SPEC 1.1).

``forward(x, t, y, lq_latent, sigma)`` returns the velocity ``v = eps - x0`` in pixel space.
For sampling, ``adapter_tokens`` runs the latent branch's conv trunk once per decode and
``forward_with_features`` reuses it at every step (the adapter depends only on the latent and the
output grid); ``adapter_features`` is the upstream call returning every head's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import LatentAdapter, SigmaGate, align_to_grid, unpatchify_latent
from .blocks import FinalLayer, LinearEmbedder, PatchBlock, PixelBlock, TextEmbedder, TimestepEmbedder
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
        """Every adapter output ``[B, L, hidden]`` (the upstream ``lq_proj`` call)."""
        return self.lq_proj(lq_latent, grid)

    # The adapter split in three, for the decoder (trunk once per decode, heads per use) and
    # the tiler (align the whole latent once, run the trunk per tile on a crop with a margin).
    # ``adapter_heads(adapter_tokens(z, grid))`` computes what ``adapter_features`` does.
    def adapter_input(self, lq_latent: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The latent unpatchified and resampled to the patch grid: ``[B, C', Hs, Ws]``."""
        ad = self.lq_proj
        z = unpatchify_latent(lq_latent.to(ad.latent_proj[0].weight.dtype), ad.unpatchify)
        return align_to_grid(z, grid, ad.ratio)

    def adapter_trunk(self, aligned: torch.Tensor) -> torch.Tensor:
        """Conv stack on a (crop of the) grid-aligned latent: ``[B, hid, h, w]``."""
        return self.lq_proj.latent_proj(aligned)

    @staticmethod
    def trunk_tokens(trunk: torch.Tensor) -> torch.Tensor:
        """``[B, hid, h, w] -> [B, h*w, hid]`` (row-major, as the patch tokens), contiguous."""
        return trunk.flatten(2).transpose(1, 2).contiguous()

    def adapter_tokens(self, lq_latent: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The adapter's shared features ``[B, L, hid]``; pass them to ``forward_with_features``."""
        return self.trunk_tokens(self.adapter_trunk(self.adapter_input(lq_latent, grid)))

    def adapter_head(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Adapter output ``k`` (injection k, or the PiT feature for ``k = num_injections``)."""
        heads = self.lq_proj.output_heads
        return heads[k](tokens) if k < len(heads) else self.lq_proj.pit_head(tokens)

    def adapter_heads(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        n = len(self.lq_proj.output_heads) + (self.lq_proj.pit_head is not None)
        return [self.adapter_head(tokens, k) for k in range(n)]

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
        feats = self.adapter_features(lq_latent, self.grid_for(x))
        return self.forward_with_features(x, t, y, feats, sigma)

    def forward_with_features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                              feats, sigma: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """One network call with the adapter already run.

        ``feats`` is either the list from ``adapter_features`` or the shared tokens from
        ``adapter_tokens`` (then each head runs right before its gate and is freed after it:
        a few GEMMs per step instead of keeping 7-8 ``[B, L, 1536]`` maps for the whole decode).
        ``chunk`` bounds the rows per slice of the token-wise work (pixel blocks, final layer,
        patch MLPs x4; see blocks.py); None falls back to ``self.pixel_chunk`` (None = all).
        """
        cfg = self.cfg
        chunk = self.pixel_chunk if chunk is None else chunk
        feature = (lambda k: feats[k]) if isinstance(feats, (list, tuple)) else (
            lambda k: self.adapter_head(feats, k))
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
        mlp_chunk = None if not chunk else PATCH_MLP_CHUNK_FACTOR * int(chunk)
        for i, block in enumerate(self.patch_blocks):
            if i % cfg.inject_interval == 0:
                k = i // cfg.inject_interval
                s = self.lq_proj.gate_modules[k](s, feature(k), sigma)
            s, y_emb = block(s, y_emb, c, rope_img, rope_txt, update_text=i != last, chunk=mlp_chunk)
        del y_emb
        s = F.silu(t_emb + s)
        if self.pit_lq_gate is not None:
            s = self.pit_lq_gate(s, feature(cfg.num_injections), sigma)
        s_cond = s.reshape(b * gh * gw, -1)
        del s

        p = self._pixel_tokens(x)
        del x
        rope_pix = rope_2d(gh, gw, cfg.pixel_head_dim, cfg.rope_ref_grid, dev)
        for block in self.pixel_blocks:
            p = block(p, s_cond, b, rope_pix, chunk=chunk, inplace=True)
        return self._unpatchify(self.final_layer(p, chunk=chunk), b, hh, ww)
