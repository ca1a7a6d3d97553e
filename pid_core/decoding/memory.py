"""Working memory of a PiD decode and the whole-vs-tiled plan.

The cost model is a pure function of the network config, the output size, the batch and the
compute dtype (nothing is allocated), so callers can ask "will 4096 x 4096 fit in 8 GB, and with
which tiles?" before loading. It was fitted to traces of the real code on the ``meta`` device
(``bench/memtrace.py``) and errs high. The device probes (``available_bytes``, ``decode_budget``)
are at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PiDOutOfMemoryError
from ..network.config import PiDNetConfig
from ..network.flops import param_count
from .tiling import Tile, tile_grid

GiB = 1 << 30
MiB = 1 << 20

# Transient memory one chunk of the token-wise work may use (pixel blocks, final layer, patch
# MLPs), and at most this many chunks (larger ones on large images: the kernel count stays that of
# a 2048^2 call). Fixed, so a decode's numbers do not depend on how much memory happens to be
# free; only a budget below 16x the target shrinks the chunks.
CHUNK_TARGET_BYTES = 512 * MiB
MAX_CHUNKS = 4
MIN_CHUNK_ROWS = 64
# Smallest tile the planner and the out-of-memory retry go down to (px per side).
MIN_TILE_PX = 64
# Multiplier on the activation estimate for allocator rounding and fragmentation.
ALLOCATOR_SLACK = 1.10
# The canvas of a tiled decode moves to the CPU when it would take more than this share of
# the budget.
STATE_SHARE_OF_BUDGET = 0.25

# -------------------------------------------------------------------------------------- memory
def weight_bytes(cfg: PiDNetConfig, dtype=torch.bfloat16) -> int:
    return param_count(cfg) * dtype.itemsize


def _rows(cfg: PiDNetConfig, height: int, width: int, batch: int) -> int:
    return batch * (height // cfg.patch_size) * (width // cfg.patch_size)


def _chunk_row_bytes(cfg: PiDNetConfig, e: int) -> int:
    """Transient bytes per pixel-block row (one patch token) in a chunk: modulation, the
    modulated/normed pixels and the MLP hidden layer (traced: ~220 values per pixel)."""
    return cfg.patch_size ** 2 * (6 * cfg.pixel_dim + 2 * cfg.pixel_mlp_hidden) * e


def chunk_rows(cfg: PiDNetConfig, height: int, width: int, batch: int = 1, dtype=torch.bfloat16,
               budget_bytes: int | None = None) -> int | None:
    """Patch tokens per chunk of the token-wise work (None = all at once)."""
    total, row_bytes = _rows(cfg, height, width, batch), _chunk_row_bytes(cfg, dtype.itemsize)
    if budget_bytes is not None and budget_bytes < 16 * CHUNK_TARGET_BYTES:
        rows = max(MIN_CHUNK_ROWS, max(budget_bytes // 16, 16 * MiB) // row_bytes)
    else:
        rows = max(MIN_CHUNK_ROWS, CHUNK_TARGET_BYTES // row_bytes, -(-total // MAX_CHUNKS))
    return None if rows >= total else int(rows)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int          # bytes of the network's parameters
    activations: int      # peak bytes of everything else (with ALLOCATOR_SLACK)
    state: int = 0        # part of ``activations`` held by a tiled decode's full-size canvas

    @property
    def total(self) -> int:
        return self.weights + self.activations


def _activation_bytes(cfg: PiDNetConfig, height: int, width: int, batch: int, e: int,
                      chunk: int | None) -> int:
    """Peak activation bytes of a whole-image decode, monotone in the size: a chunked decode
    is counted at least as high as an unchunked one of ``chunk`` rows (chunking lowers the real
    peak just past the threshold; the planner needs an estimate that never shrinks with size)."""
    R = _rows(cfg, height, width, batch)
    act = _stage_bytes(cfg, batch * height * width, R, batch, e, chunk)
    if chunk is not None and chunk < R:
        c = int(chunk)
        act = max(act, _stage_bytes(cfg, c * cfg.patch_size ** 2, c, batch, e, None))
    return act


def _stage_bytes(cfg: PiDNetConfig, px: int, R: int, batch: int, e: int, chunk: int | None) -> int:
    """Peak activation bytes (sampler state included, no slack) for ``px`` pixels in ``R`` rows.

    The terms mirror what is alive at each stage's peak (traced on the meta device):
    the fp32 state ``x_t`` throughout; in a patch block the residual plus ~9 (MLP chunked) to
    10 token-sized buffers of attention/MLP work; in a pixel block the pixel stream, the
    condition, the adaLN weight slices, then either the attention (~6 buffers of the 1152-d
    tokens) or one chunk of per-pixel work; in the sampler x0, the new noise and a temporary.
    """
    # px: output pixels, R: patch tokens (both over the batch)
    Tb = batch * cfg.text_tokens
    D, A, d, P2 = cfg.hidden_size, cfg.pixel_attn_dim, cfg.pixel_dim, cfg.patch_size ** 2
    c = R if chunk is None else min(R, int(chunk))
    cm = R if chunk is None else min(R, 4 * int(chunk))
    U = (R + Tb) * D * e
    fixed = R * cfg.adapter_dim * e + Tb * (cfg.text_dim * 4 + 2 * D * e) + 16 * MiB
    state = 12 * px                                # fp32 x_t
    x_copy = 3 * px * e if e < 4 else 0            # its compute-dtype copy (until pixel tokens)
    patch = R * D * e + max(9 * U, 2 * U + cm * (3 * cfg.mlp_hidden + 2 * D) * e)
    stream = R * P2 * d * e
    # chunked: the adaLN weight's row slices; one slice: the whole modulation, alive across
    # the attention
    slices = 6 * P2 * d * D * e if c < R else R * P2 * 6 * d * e
    pixel = (R * D * e + stream + slices
             + max(6 * R * A * e, R * A * e + c * _chunk_row_bytes(cfg, e), stream + x_copy))
    final = stream + 6 * px * e + c * P2 * d * 8
    sampler = 36 * px + 3 * px * e
    return int(fixed + max(state + x_copy + patch, state + pixel, state + final, sampler))


def estimate_memory(cfg: PiDNetConfig, height: int, width: int, batch: int = 1,
                    dtype=torch.bfloat16, chunk="auto") -> MemoryEstimate:
    """Working memory of a whole-image decode at ``height x width`` (weights + peak activations).

    ``chunk``: rows per chunk, None for unchunked, or "auto" (``chunk_rows``, as the decoder).
    Monotone in height, width and batch; smaller for smaller dtypes.
    """
    e = dtype.itemsize
    if chunk == "auto":
        chunk = chunk_rows(cfg, height, width, batch, dtype)
    act = _activation_bytes(cfg, height, width, batch, e, chunk)
    return MemoryEstimate(weight_bytes(cfg, dtype), int(act * ALLOCATOR_SLACK))


def canvas_bytes(height: int, width: int, batch: int = 1) -> int:
    """Full-size buffers of a tiled decode: the state ``x_t`` and the blended canvas (fp32, 3 ch,
    24 bytes per output pixel). The next noise is drawn into the dead state, the blend weights
    are 1-D profiles (``tiling.blend_profiles``) and the image is made in place, so nothing
    else is full-size."""
    return batch * height * width * 4 * 3 * 2


def tile_feature_bytes(cfg: PiDNetConfig, height: int, width: int, tile: tuple[int, int],
                       batch: int = 1, dtype=torch.bfloat16) -> int:
    """What a tiled decode keeps beside the canvas: the adapter features of every tile (made
    once per decode, ``adapter_dim`` values per patch cell in the compute dtype) and the latent
    on the patch grid."""
    th, tw = min(tile[0], height), min(tile[1], width)
    n = len(tile_grid(height, width, th, tw, default_overlap(th, tw)))
    e = dtype.itemsize
    return (n * _rows(cfg, th, tw, batch) * cfg.adapter_dim * e
            + _rows(cfg, height, width, batch) * cfg.adapter_in_channels * e)


def host_bytes(cfg: PiDNetConfig, plan: "DecodePlan", dtype=torch.bfloat16) -> int:
    """System RAM a tiled decode's full-size buffers take when its canvas is in CPU memory:
    canvas + tile features + two tile-sized transfer buffers (0 for a whole-image plan)."""
    if not plan.tiled:
        return 0
    h, w = plan.output_size
    th, tw = plan.tile_size
    return (canvas_bytes(h, w, plan.batch) + tile_feature_bytes(cfg, h, w, (th, tw), plan.batch, dtype)
            + 2 * plan.batch * min(th, h) * min(tw, w) * 12)


def estimate_tiled_memory(cfg: PiDNetConfig, height: int, width: int, tile: tuple[int, int],
                          batch: int = 1, dtype=torch.bfloat16, chunk="auto",
                          state_on_device: bool = True) -> MemoryEstimate:
    """Working memory of a tiled decode with ``tile = (th, tw)`` px tiles (clamped to the image)."""
    th, tw = min(tile[0], height), min(tile[1], width)
    e = dtype.itemsize
    if chunk == "auto":
        chunk = chunk_rows(cfg, th, tw, batch, dtype)
    act = _activation_bytes(cfg, th, tw, batch, e, chunk)
    state = 0
    if (th, tw) != (height, width):
        state = canvas_bytes(height, width, batch) + tile_feature_bytes(cfg, height, width, (th, tw),
                                                                       batch, dtype)
    on_dev = state if state_on_device else 0
    return MemoryEstimate(weight_bytes(cfg, dtype), int((act + on_dev) * ALLOCATOR_SLACK), on_dev)


def default_overlap(tile_h: int, tile_w: int) -> int:
    """Overlap of neighbouring tiles in px: 1/8 of the shorter tile side, 32..256 px, step 16."""
    return int(min(256, max(32, (min(tile_h, tile_w) // 8) // 16 * 16)))


# ------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class DecodePlan:
    """How a decode will run. ``tiles`` has one tile covering the image for a whole decode."""

    output_size: tuple[int, int]
    batch: int
    tiles: tuple[Tile, ...]
    tile_size: tuple[int, int] | None   # None: whole image
    overlap: int                        # px shared by neighbouring tiles (0 when whole)
    chunk: int | None                   # patch tokens per chunk (None: all at once)
    state_on_device: bool               # False: the tiled canvas lives in CPU memory
    estimate: MemoryEstimate
    budget_bytes: int | None
    reason: str
    latent_size: tuple[int, int] | None = None   # (h, w) of the latent it was made for

    @property
    def tiled(self) -> bool:
        return self.tile_size is not None

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    def progress_total(self, steps: int) -> int:
        """What a decode's ``callback(step, total)`` counts to: tiles x network calls per tile."""
        return len(self.tiles) * steps

    def describe(self) -> str:
        h, w = self.output_size
        est = f"~{self.estimate.total / GiB:.2f} GiB"
        if not self.tiled:
            return f"{h}x{w} whole image ({est})"
        th, tw = self.tile_size
        return f"{h}x{w} in {self.n_tiles} tiles of {th}x{tw} px, overlap {self.overlap} px ({est})"


def _snap(v: int, step: int = 16) -> int:
    return max(step, (int(v) // step) * step)


def whole_plan(cfg, height, width, batch=1, dtype=torch.bfloat16, budget_bytes=None,
               reason="whole image") -> DecodePlan:
    est = estimate_memory(cfg, height, width, batch, dtype)
    return DecodePlan((height, width), batch, (Tile(0, 0, height, width),), None, 0,
                      chunk_rows(cfg, height, width, batch, dtype, budget_bytes), True, est,
                      budget_bytes, reason)


def tiled_plan(cfg, height, width, tile, batch=1, dtype=torch.bfloat16, budget_bytes=None,
               overlap=None, reason="tiled", state_on_device: bool | None = None) -> DecodePlan:
    """A plan with ``tile = (th, tw)`` px tiles (clamped to the image). The canvas stays on the
    device unless ``state_on_device`` says otherwise or (None) it would take more than
    ``STATE_SHARE_OF_BUDGET`` of the budget or not fit it."""
    th, tw = min(_snap(tile[0]), height), min(_snap(tile[1]), width)
    ov = default_overlap(th, tw) if overlap is None else _snap(overlap) if overlap else 0
    tiles = tuple(tile_grid(height, width, th, tw, ov))
    on_dev = state_on_device
    if on_dev is None:
        on_dev = budget_bytes is None or (
            canvas_bytes(height, width, batch) <= STATE_SHARE_OF_BUDGET * budget_bytes
            and estimate_tiled_memory(cfg, height, width, (th, tw), batch, dtype).total <= budget_bytes)
    est = estimate_tiled_memory(cfg, height, width, (th, tw), batch, dtype, state_on_device=on_dev)
    return DecodePlan((height, width), batch, tiles, (th, tw), ov,
                      chunk_rows(cfg, th, tw, batch, dtype, budget_bytes), on_dev, est,
                      budget_bytes, reason)


def plan_decode(cfg: PiDNetConfig, height: int, width: int, batch: int = 1, dtype=torch.bfloat16,
                budget_bytes: int | None = None, max_tile: int | None = None,
                overlap: int | None = None) -> DecodePlan:
    """Whole image if it fits ``budget_bytes`` (None = unlimited) and no side exceeds ``max_tile``
    (the checkpoint's largest trained side); else the largest square-ish tiles that fit.

    Tiles never exceed ``max_tile`` and go down to ``MIN_TILE_PX``; when even those do not fit,
    the smallest-tile plan is returned (its ``estimate`` exceeds the budget: the caller decides).
    """
    cap = max(height, width) if max_tile is None else _snap(max_tile)
    if max(height, width) <= cap:
        plan = whole_plan(cfg, height, width, batch, dtype, budget_bytes)
        if budget_bytes is None or plan.estimate.total <= budget_bytes:
            return plan
    why = (f"{height}x{width} exceeds the checkpoint's largest trained side {cap} px"
           if max(height, width) > cap else f"whole image needs ~{plan.estimate.total / GiB:.2f} GiB "
           f"of {budget_bytes / GiB:.2f} GiB")
    side = min(cap, max(height, width))
    while True:  # largest tile side (step 64) that fits
        p = tiled_plan(cfg, height, width, (side, side), batch, dtype, budget_bytes, overlap,
                       reason=f"tiled: {why}")
        if budget_bytes is None or p.estimate.total <= budget_bytes or side <= MIN_TILE_PX:
            return p
        side = max(MIN_TILE_PX, _snap(side - 64, 64) if side > 64 else MIN_TILE_PX)


def smaller_plan(cfg, plan: DecodePlan, dtype=torch.bfloat16) -> DecodePlan | None:
    """The plan to retry with after running out of memory: tiles of half the current side
    (whole image -> half the image's sides); None when already at ``MIN_TILE_PX``."""
    h, w = plan.output_size
    th, tw = plan.tile_size or (h, w)
    if max(th, tw) <= MIN_TILE_PX:
        return None
    nh, nw = max(MIN_TILE_PX, _snap(th // 2)), max(MIN_TILE_PX, _snap(tw // 2))
    return tiled_plan(cfg, h, w, (min(nh, h), min(nw, w)), plan.batch, dtype, plan.budget_bytes,
                      reason="retry after running out of memory")


# ------------------------------------------------------------------------------ the device probe
def available_bytes(device) -> int | None:
    """Memory a decode can still get on ``device``: free plus cached-but-unused on CUDA; the
    kernel's MemAvailable on the CPU; None where unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def decode_budget(device, resident_bytes: int) -> int | None:
    """The budget ``plan_decode`` gets on ``device`` (None = unlimited: the CPU, where the OS
    pages): what is available plus ``resident_bytes`` the network already holds there (the
    estimates count the weights)."""
    if torch.device(device).type != "cuda":
        return None
    return available_bytes(device) + int(resident_bytes)


def check_host_memory(cfg: PiDNetConfig, plan: DecodePlan, dtype, on_cpu: bool) -> None:
    """Refuse, before any work, a decode whose full-size buffers would live in system RAM that is
    not available (``on_cpu``: the net runs on the CPU or the plan keeps its canvas there)."""
    need = host_bytes(cfg, plan, dtype) if on_cpu and plan.tiled else 0
    free = available_bytes("cpu") if need else None
    if free is None or need <= free:
        return
    h, w = plan.output_size
    per_px = need / (plan.batch * h * w)
    raise PiDOutOfMemoryError(
        f"a {h}x{w} tiled decode (batch {plan.batch}) keeps its full-size canvas in system RAM: "
        f"it needs about {need / GiB:.1f} GiB ({per_px:.0f} bytes per output pixel), but "
        f"only {free / GiB:.1f} GiB is available. Close other programs, or choose a "
        f"smaller output size (about {free / per_px / 1e6:.0f} megapixels fit now).")


__all__ = ["weight_bytes", "chunk_rows",
           "MemoryEstimate", "estimate_memory", "estimate_tiled_memory", "canvas_bytes",
           "tile_feature_bytes", "host_bytes",
           "default_overlap", "DecodePlan", "plan_decode", "whole_plan", "tiled_plan",
           "smaller_plan", "MIN_TILE_PX", "available_bytes", "decode_budget", "check_host_memory"]
