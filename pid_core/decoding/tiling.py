"""Tiled decoding (MultiDiffusion-style): overlapping tiles on the 16-px patch grid; every step each
tile's clean-image estimate is weighted by its normalised feather (separable: two 1-D profiles, made
on the device once per decode) and added into one canvas, then the sampler re-noises the whole
canvas with one noise field. Each tile's adapter features come from its crop of the grid-aligned
latent plus the trunk's receptive radius; its positions and RoPE are tile-local, as a standalone
decode of its size. A single tile covering the image runs exactly the whole-image operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import PiDInputError
from ..network.adapter import tokens_of


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


def ramp(n: int, overlap: int, lead: bool, trail: bool, device=None) -> torch.Tensor:
    """1-D feather ``[n]`` (fp32, > 0): linear ramps of ``overlap`` px at a leading and/or trailing
    inner edge, 1 elsewhere."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        r = ((torch.arange(n, dtype=torch.float32, device=device) + 0.5) / overlap).clamp(max=1.0)
        if lead:
            w = torch.minimum(w, r)
        if trail:
            w = torch.minimum(w, r.flip(0))
    return w


def feather(tile: Tile, height: int, width: int, overlap: int) -> torch.Tensor:
    """Blend weight ``[h, w]`` (fp32, > 0): linear ramps of ``overlap`` px on inner edges, 1 elsewhere.

    Image borders are not ramped, so a tile covering the image weighs exactly 1 everywhere. The
    weight is separable: ``ramp(rows) x ramp(cols)``.
    """
    wy = ramp(tile.h, overlap, tile.y0 > 0, tile.y0 + tile.h < height)
    wx = ramp(tile.w, overlap, tile.x0 > 0, tile.x0 + tile.w < width)
    return wy[:, None] * wx[None, :]


def blend_profiles(tiles, length: int, overlap: int, axis: int, device=None) -> dict[int, torch.Tensor]:
    """Normalised 1-D feathers along one axis (0: rows, 1: columns) of a tile grid.

    For tiles on a grid (every row start paired with every column start, one tile size) the sum
    of the feathers is separable, ``S(y, x) = Sy(y) * Sx(x)``, so each tile's normalised weight
    is ``(wy / Sy) x (wx / Sx)``: returned here per start as ``wy / Sy`` over the tile's span.
    No full-size weight map is needed and the blended canvas needs no division.
    """
    spans = {(t.y0, t.h) if axis == 0 else (t.x0, t.w) for t in tiles}
    total = torch.zeros(length, device=device)
    raw = {}
    for start, n in sorted(spans):
        raw[start] = ramp(n, overlap, start > 0, start + n < length, device)
        total[start:start + n] += raw[start]
    return {start: w / total[start:start + w.shape[0]] for start, w in raw.items()}


def tile_tokens(adapter, aligned: torch.Tensor, tile: Tile, device, patch: int = 16) -> torch.Tensor:
    """Adapter features ``[B, cells, hid]`` of ``tile``: the conv trunk on its crop of the
    grid-aligned latent plus the trunk's receptive radius (clipped at the image border)."""
    m = adapter.receptive_radius
    gh, gw = aligned.shape[-2:]
    r0, c0 = tile.y0 // patch, tile.x0 // patch
    r1, c1 = r0 + tile.h // patch, c0 + tile.w // patch
    a0, b0, a1, b1 = max(0, r0 - m), max(0, c0 - m), min(gh, r1 + m), min(gw, c1 + m)
    trunk = adapter.latent_proj(aligned[..., a0:a1, b0:b1].to(device))
    return tokens_of(trunk[..., r0 - a0:r1 - a0, c0 - b0:c1 - b0])


class TiledDenoiser:
    """The denoiser ``sampler.sample`` runs for a tiled decode: ``x0`` of the whole canvas.

    ``x0_of(x, t, tokens, at)`` is the network call for one tile at pixel offset ``at`` (on
    ``device``, returning its estimate); ``aligned`` is the latent on the patch grid, kept where the
    canvas is (``state_device``), like each tile's adapter features (made once per decode). Each
    call crops every tile from the state, weights its estimate with its normalised feather and adds
    it into one fresh canvas: full-size memory is the state and that canvas (fp32).
    ``parallel`` (``frontends.distributed.TileParallel``) spreads the tiles over processes:
    ``parallel.owns(j)`` says whether this process computes tile ``j``, and ``parallel.parts(estimate,
    tiles, like, device)`` yields ``(j, weighted estimate)`` for every tile in order.
    """

    def __init__(self, x0_of: Callable, adapter, aligned: torch.Tensor, tiles, size: tuple[int, int],
                 overlap: int, device, state_device, parallel=None):
        height, width = size
        self.x0_of, self.tiles, self.parallel = x0_of, list(tiles), parallel
        self.device, self.state_device = device, state_device
        own = [parallel is None or parallel.owns(j) for j in range(len(self.tiles))]
        self.tokens = [tile_tokens(adapter, aligned, t, device).to(state_device) if mine else None
                       for t, mine in zip(self.tiles, own)]
        self.rows = self.cols = None
        if len(self.tiles) > 1:
            check_grid(self.tiles)
            self.rows = {k: w.view(-1, 1) for k, w in blend_profiles(self.tiles, height, overlap, 0, device).items()}
            self.cols = blend_profiles(self.tiles, width, overlap, 1, device)

    @property
    def calls_per_step(self) -> int:
        """Network calls of this process per step (all tiles, or its own under ``parallel``)."""
        return sum(tok is not None for tok in self.tokens)

    def estimate(self, x: torch.Tensor, t: float, j: int) -> torch.Tensor:
        """Tile ``j``'s estimate at time ``t`` times its blend weight, on the device."""
        tile = self.tiles[j]
        x0 = self.x0_of(tile.crop(x).contiguous().to(self.device), t, self.tokens[j].to(self.device),
                        (tile.y0, tile.x0))
        if self.rows is not None:
            x0.mul_(self.rows[tile.y0]).mul_(self.cols[tile.x0])
        return x0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        if self.parallel is None:
            parts = ((j, self.estimate(x, t, j)) for j in range(len(self.tiles)))
        else:
            parts = self.parallel.parts(lambda j: self.estimate(x, t, j), self.tiles, x, self.device)
        if self.rows is None:   # one tile covering the image: its estimate is the canvas
            return next(iter(parts))[1].to(self.state_device)
        acc = torch.zeros_like(x)
        for j, part in parts:
            self.tiles[j].crop(acc).add_(part.to(self.state_device))
            del part
        return acc


def check_grid(tiles) -> None:
    """Refuse tiles that are not a full grid of one size (``blend_profiles`` needs one)."""
    ys, xs = {t.y0 for t in tiles}, {t.x0 for t in tiles}
    sizes = {(t.h, t.w) for t in tiles}
    if len(sizes) != 1 or {(t.y0, t.x0) for t in tiles} != {(y, x) for y in ys for x in xs}:
        raise PiDInputError(
            f"tiles must form a grid of equal tiles (every row start with every column start, as "
            f"tile_grid makes them); got {len(tiles)} tiles with {len(ys)} row starts, {len(xs)} "
            f"column starts and sizes {sorted(sizes)[:3]}. Make the tiles with tiling.tile_grid.")


def tile_request(tile, overlap):
    """Normalise ``tile`` to None | "auto" | (th, tw) and ``overlap`` to None | px."""
    def whole(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()

    req, ok = None, True
    if tile is None:
        req = None
    elif isinstance(tile, str) and tile.lower() == "auto":
        req = "auto"
    elif whole(tile):
        req = (int(tile), int(tile))
    elif isinstance(tile, (tuple, list)) and len(tile) == 2 and all(whole(v) for v in tile):
        req = (int(tile[0]), int(tile[1]))
    else:
        ok = False
    if overlap is not None and not (whole(overlap) and overlap >= 0):
        ok = False
    if not ok:
        raise PiDInputError(
            f"tile settings are invalid: tile={tile!r:.40}, tile_overlap={overlap!r:.40}; expected "
            f"tile None (whole image), 'auto' (chosen from the memory budget), a side in px or "
            f"(height, width) in px (multiples of 16), and tile_overlap None or a number of px >= 0.",
            input_name="tile")
    return req, None if overlap is None else int(overlap)
