"""Many processes, one job, with ``torch.distributed`` (launched by ``torchrun``).

Items (``decode-batch``): process ``rank`` takes items ``i % world == rank``, as upstream shards its
prompts (nv-tlabs/PiD @2c8814c ``pid/_src/inference/from_ldm.py``); each item has its own seed, so
outputs do not depend on the process count. Tiles (``TileParallel``): the tiles of one decode are
spread over the processes each step; every process keeps the whole canvas, receives every tile's
weighted estimate from its owner and blends them in tile order, so the image is bit-identical to
a single-process tiled decode. ``init_from_env`` reads torchrun's variables (none: one process).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..decoding.memory import DecodePlan
from ..errors import PiDInputError, PiDOutOfMemoryError

log = logging.getLogger(__name__)

# How long a process waits for the others in a collective before giving up (a crashed or stuck
# peer then surfaces as an error instead of a hang).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, on ``device``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    objects: object = None   # a gloo process group for Python objects (None: one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise PiDInputError(f"environment variable {name}={raw!r} is not a whole number; torchrun sets "
                            f"RANK, WORLD_SIZE and LOCAL_RANK to integers. Launch with torchrun, or "
                            f"unset them for a single process.") from None


def init_from_env(device: str | None = None) -> World:
    """Join the torchrun job this process belongs to (or none) and pick its device.

    ``device``: "cuda" (each process on ``cuda:LOCAL_RANK``), "cpu", an explicit "cuda:N", or
    None for CUDA when available. The backend is NCCL on CUDA and gloo on the CPU; Python
    objects always travel over a gloo group.
    """
    size, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(want)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if size > 1 else 0)
    if dev.type == "cuda":
        if not torch.cuda.is_available() or dev.index >= torch.cuda.device_count():
            raise PiDInputError(
                f"process {rank} (LOCAL_RANK {local}) needs {dev}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s). Start at most that many processes per "
                f"node (torchrun --nproc-per-node), or pass --device cpu.")
        torch.cuda.set_device(dev)
    if size <= 1:
        return World(device=dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    objects = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if dev.type == "cuda" else None
    world = World(dist.get_rank(), dist.get_world_size(), local, dev, objects or dist.group.WORLD)
    log.info("process %d of %d on %s", world.rank, world.size, dev)
    return world


def close(world: World) -> None:
    """Leave the process group (after a last barrier, so no process exits while others talk)."""
    if world.distributed and dist.is_initialized():
        dist.barrier(group=world.objects)
        dist.destroy_process_group()


def shard(items: list, world: World) -> list:
    """This process's share of ``items``: every ``world.size``-th, starting at its rank."""
    return items[world.rank::world.size]


def gather_to_rank0(obj, world: World) -> list | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0 (picklable objects), None elsewhere."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size if world.is_main else None
    dist.gather_object(obj, out, dst=0, group=world.objects)
    return out


def broadcast_from_rank0(obj, world: World):
    """Rank 0's ``obj`` on every process."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=world.objects)
    return box[0]


class TileParallel:
    """The ``parallel`` hook of ``tiling.TiledDenoiser``: tiles spread round-robin over ``world``.

    Pass it to ``PiDDecoder.decode(..., plan=shared_plan(...), options=DecodeOptions(parallel=
    TileParallel(world)))`` on every process of the job; each returns the same image.
    """

    def __init__(self, world: World):
        self.world = world

    def owns(self, j: int) -> bool:
        return j % self.world.size == self.world.rank

    def parts(self, estimate, tiles, like: torch.Tensor, device):
        """``(j, weighted estimate of tile j)`` for every tile in order (see the module doc)."""
        n, size = len(tiles), self.world.size
        for first in range(0, n, size):
            j_own = first + self.world.rank
            own = estimate(j_own) if j_own < n else None   # the processes compute in parallel
            for j in range(first, min(n, first + size)):
                t = tiles[j]
                buf = own.contiguous() if j == j_own else torch.empty(
                    (*like.shape[:2], t.h, t.w), dtype=like.dtype, device=device)
                if size > 1:
                    dist.broadcast(buf, src=j % size)
                yield j, buf

    def out_of_memory(self, plan: DecodePlan, error: str) -> PiDOutOfMemoryError:
        th, tw = plan.tile_size or plan.output_size
        return PiDOutOfMemoryError(
            f"Out of memory in a tile-parallel decode with tiles of {th}x{tw} px on process "
            f"{self.world.rank} ({self.world.device}): the processes decode in step, so the decode "
            f"cannot be retried in smaller tiles on one of them. Rerun with a smaller --tile "
            f"(e.g. {max(64, th // 2 // 16 * 16)}), or free memory on that GPU. ({error})")


def shared_plan(decoder, latent_shape, world: World, output_size=None, tile="auto",
                tile_overlap: int | None = None) -> DecodePlan:
    """One plan for every process: made on rank 0 with the smallest budget any process has."""
    from ..decoding import memory
    budgets = gather_to_rank0(memory.decode_budget(decoder.device, memory.weight_bytes(decoder.net.cfg,
                                                                                         decoder.dtype)), world)
    plan = error = None
    if world.is_main:
        known = [b for b in budgets if b is not None]
        try:
            plan = decoder.plan(latent_shape, output_size, tile, tile_overlap,
                                memory_budget_bytes=min(known) if known else None)
        except PiDInputError as exc:   # every process raises it, none waits for a plan
            error = exc
        if plan is not None and world.distributed and not plan.tiled:
            log.warning("tile-parallel: %s, so every process decodes the whole image; pass a tile "
                        "size (--tile) to spread tiles over the %d processes.", plan.describe(),
                        world.size)
    plan, error = broadcast_from_rank0((plan, error), world)
    if error is not None:
        raise error
    return plan
