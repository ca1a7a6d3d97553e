"""Tiled decoding for images larger than memory (or than a checkpoint's trained sizes).

The output is covered by overlapping tiles on the 16-px patch grid. Every sampler step runs the
network on each tile, turns its velocity into a clean-image estimate ``x0`` and blends the
estimates into one full-size canvas with feathered weights (MultiDiffusion-style); the global
sampler update (re-noising with ONE full-size noise field) then happens on the whole canvas, so
every tile starts each step from the same shared state and the seams have nothing to disagree
about beyond the network's own context.

What each tile sees:

* **pixels**: its crop of the global state ``x_t`` (the noise of a tile is a crop of the full-size
  draws, in the same generator order as a whole-image decode);
* **latent**: the adapter's input is the whole latent resampled to the patch grid once; each tile
  runs the adapter's conv trunk on its crop plus a context margin of ``adapter_context(cfg)``
  patch cells (the trunk's receptive radius), then keeps the features of its own cells. With the
  margin the convolutions see exactly what they see in a whole-image decode; only the GroupNorm
  statistics are those of the crop;
* **positions**: each tile is decoded as a standalone image of its size: its pixel sin-cos table
  and its RoPE grids are tile-local (positions 0..h-1, NTK scaling for the tile's grid), exactly
  like a normal decode at that size. So tiles should stay inside the checkpoint's trained sizes.

A tiling whose single tile covers the image runs the very same operations as a whole-image
decode and gives a bit-identical result. Progress is reported through ``callback(k, total)``
after every tile forward (``total = tiles x steps``), so a raising callback interrupts between
tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import TIMESTEP_SCALE, PiDNetConfig
from .sampler import renoise, t_schedule, velocity_to_x0


@dataclass(frozen=True)
class Tile:
    """One tile in output pixels: rows ``y0:y0+h``, columns ``x0:x0+w`` (multiples of 16)."""

    y0: int
    x0: int
    h: int
    w: int

    def crop(self, t: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """``t[..., rows, cols]`` for a tensor at ``1/scale`` of the output resolution."""
        y0, y1 = self.y0 // scale, (self.y0 + self.h) // scale
        x0, x1 = self.x0 // scale, (self.x0 + self.w) // scale
        return t[..., y0:y1, x0:x1]


def adapter_context(cfg: PiDNetConfig) -> int:
    """Receptive radius of the adapter's conv trunk in patch cells (one per 3x3 conv)."""
    return 2 + 2 * cfg.adapter_res_blocks


def _starts(n: int, t: int, overlap: int) -> list[int]:
    """Start cells of tiles of ``t`` cells covering ``n`` cells with at least ``overlap`` in common."""
    if t >= n:
        return [0]
    k = math.ceil((n - overlap) / (t - overlap))
    return [((n - t) * i) // (k - 1) for i in range(k)]


def tile_grid(height: int, width: int, tile_h: int, tile_w: int, overlap: int, patch: int = 16) -> list[Tile]:
    """Equal tiles (clamped to the image) covering ``height x width`` px, row-major.

    Tile starts are spread evenly on the patch grid; neighbours share at least ``overlap`` px
    (more where the image does not divide evenly). All arguments in px, multiples of ``patch``.
    """
    th, tw = min(tile_h, height), min(tile_w, width)
    gh, gw, ov = height // patch, width // patch, overlap // patch
    ov_h, ov_w = min(ov, th // patch - 1), min(ov, tw // patch - 1)
    return [Tile(r * patch, c * patch, th, tw)
            for r in _starts(gh, th // patch, max(0, ov_h))
            for c in _starts(gw, tw // patch, max(0, ov_w))]


def feather(tile: Tile, height: int, width: int, overlap: int) -> torch.Tensor:
    """Blend weight ``[h, w]`` (fp32, > 0): linear ramps of ``overlap`` px on inner edges, 1 elsewhere.

    Image borders are not ramped, so a tile covering the image weighs exactly 1 everywhere.
    """
    def ramp(n: int, lead: bool, trail: bool) -> torch.Tensor:
        w = torch.ones(n)
        if overlap > 0:
            r = ((torch.arange(n, dtype=torch.float32) + 0.5) / overlap).clamp(max=1.0)
            if lead:
                w = torch.minimum(w, r)
            if trail:
                w = torch.minimum(w, r.flip(0))
        return w

    wy = ramp(tile.h, tile.y0 > 0, tile.y0 + tile.h < height)
    wx = ramp(tile.w, tile.x0 > 0, tile.x0 + tile.w < width)
    return wy[:, None] * wx[None, :]


def tile_adapter_tokens(net, aligned: torch.Tensor, tile: Tile, device, patch: int = 16) -> torch.Tensor:
    """Adapter features ``[B, cells, hid]`` of ``tile``: the conv trunk on its crop of the
    grid-aligned latent plus ``adapter_context`` cells (clipped at the image border)."""
    m = adapter_context(net.cfg)
    gh, gw = aligned.shape[-2:]
    r0, c0 = tile.y0 // patch, tile.x0 // patch
    r1, c1 = r0 + tile.h // patch, c0 + tile.w // patch
    a0, b0, a1, b1 = max(0, r0 - m), max(0, c0 - m), min(gh, r1 + m), min(gw, c1 + m)
    trunk = net.adapter_trunk(aligned[..., a0:a1, b0:b1].to(device))
    return net.trunk_tokens(trunk[..., r0 - a0:r1 - a0, c0 - b0:c1 - b0])


def tiled_sample(forward: Callable, net, tiles: list[Tile], aligned: torch.Tensor, y: torch.Tensor,
                 sigma: torch.Tensor, noise, steps: int, size: tuple[int, int], overlap: int,
                 device, state_device, chunk: int | None = None,
                 callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The distilled sampler (sampler.sample) over ``tiles``; returns x0 ``[B, 3, H, W]`` in [-1, 1].

    ``forward(x, t, y, tokens, sigma, chunk)`` is the network call (``net.forward_with_features``
    or its compiled form); ``aligned`` the latent on the patch grid (``net.adapter_input``);
    ``noise.next()`` yields the full-size draws on ``state_device`` (noise, eps1, ...), where the
    canvas lives; each tile runs on ``device``.
    """
    height, width = size
    ts = t_schedule(steps)
    n_steps = len(ts) - 1
    total, done = len(tiles) * n_steps, 0
    single = len(tiles) == 1
    # Adapter features per tile, once per decode (kept where the canvas is).
    tokens = [tile_adapter_tokens(net, aligned, t, device).to(state_device) for t in tiles]
    weights, wsum = [], None
    if not single:
        wsum = torch.zeros(1, 1, height, width, device=state_device)
        for t in tiles:
            weights.append(feather(t, height, width, overlap).to(state_device))
            t.crop(wsum).add_(weights[-1])
    x = noise.next().float()
    batch = x.shape[0]
    for i in range(n_steps):
        t_cur, t_next = ts[i], ts[i + 1]
        tt = torch.full((batch,), t_cur, dtype=torch.float32, device=device) * TIMESTEP_SCALE
        acc = None if single else torch.zeros_like(x)
        for j, tile in enumerate(tiles):
            xt = tile.crop(x).contiguous().to(device)
            x0t = velocity_to_x0(xt, t_cur, forward(xt, tt, y, tokens[j].to(device), sigma, chunk))
            del xt
            if single:
                acc = x0t.to(state_device)
            else:
                tile.crop(acc).add_((x0t * weights[j].to(device)).to(state_device))
            del x0t
            done += 1
            if callback is not None:
                callback(done, total)
        x0 = acc if single else acc.div_(wsum)
        del acc
        if t_next > 0:
            x = None
            x = renoise(x0, noise.next().to(x0), t_next, inplace=True)
        else:
            x = x0
        del x0
    return x.clamp_(-1, 1)
