"""The Gaussian draws of one decode, in upstream's order: the start noise, then one per re-noise
(nv-tlabs/PiD @2c8814c ``pid/_src/models/pid_distill_model_infer.py`` draws them from one seeded
generator). By default a CPU generator, so a seed gives the same image on every device; on an
accelerator the next draw is made on a worker thread into pinned memory while the network runs,
then copied without blocking: one host-to-device copy per draw, nothing else.
"""

from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import PiDInputError

MAX_SEED = 2**64 - 1
NOISE_DEVICES = ("cpu", "device")


def make_generator(seed: int, device="cpu") -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise PiDInputError(
            f"seed={seed!r} is out of range; expected a whole number in 0..2^64-1 "
            f"(0..18446744073709551615). Use a non-negative integer seed.", input_name="seed")
    return torch.Generator(device=device).manual_seed(int(seed))


class Noise:
    """The draws of a ``[B, ...]`` state (fp32) delivered on ``device``. Item ``i`` has its own stream,
    seeded ``seed + i``, so an item of a batch gets the noise it gets alone with that seed; ``shared``:
    item 0's stream for every item (the same noise for every frame of a video). ``where="device"``
    draws on the device itself (upstream's stream on CUDA; results then depend on the device).
    ``close`` stops the worker (also as a context manager)."""

    def __init__(self, seed: int, shape, device, where: str = "cpu", shared: bool = False):
        if where not in NOISE_DEVICES:
            raise PiDInputError(f"noise_device={where!r} is not supported; choose 'cpu' (same image on "
                                f"every device) or 'device' (draw on the compute device, faster).")
        self.shape, self.device = tuple(map(int, shape)), torch.device(device)
        own = where == "device" and self.device.type != "cpu"
        make_generator(seed)   # checks the seed
        self._gens = [make_generator((seed + i) & MAX_SEED, self.device if own else "cpu")
                      for i in range(1 if shared else self.shape[0])]
        self._pin = self.device.type == "cuda" and not own
        self._pool = self._ahead = None
        if self.device.type != "cpu" and not own:   # draw on the CPU one step ahead
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pid-noise")
            self._ahead = self._pool.submit(self._draw)

    def _draw(self) -> torch.Tensor:
        """One draw of every stream, in pinned CPU memory for a CUDA device."""
        out = torch.empty((len(self._gens), *self.shape[1:]), dtype=torch.float32, pin_memory=self._pin)
        for row, gen in zip(out, self._gens):
            row.normal_(generator=gen)
        return out

    def next(self, into: torch.Tensor | None = None) -> torch.Tensor:
        """The next draw, written into ``into`` (a dead fp32 buffer of ``shape`` on ``device``) if given."""
        if into is None:
            into = torch.empty(self.shape, dtype=torch.float32, device=self.device)
        if self._pool is not None:                  # drawn ahead: one non-blocking copy
            draw, self._ahead = self._ahead.result(), self._pool.submit(self._draw)
            return into.copy_(draw.expand(self.shape), non_blocking=self._pin)
        for row, gen in zip(into, self._gens):      # in place: the values randn would give
            row.normal_(generator=gen)
        if len(self._gens) < self.shape[0]:          # shared: item 0's draw for every item
            into[1:].copy_(into[:1].expand(self.shape[0] - 1, *self.shape[1:]))
        return into

    def close(self) -> None:
        if self._pool is not None:
            self._ahead.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "Noise":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

