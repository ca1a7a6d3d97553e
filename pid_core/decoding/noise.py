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
    """Draws of ``shape`` (fp32) delivered on ``device``. ``where="device"`` draws on the device
    itself (upstream's stream on CUDA; results then depend on the device). ``shared``: one draw of
    batch 1 for the whole batch (the same noise for every frame). ``close`` stops the worker
    (also as a context manager)."""

    def __init__(self, seed: int, shape, device, where: str = "cpu", shared: bool = False):
        if where not in NOISE_DEVICES:
            raise PiDInputError(f"noise_device={where!r} is not supported; choose 'cpu' (same image on "
                                f"every device) or 'device' (draw on the compute device, faster).")
        self.shape, self.device = tuple(map(int, shape)), torch.device(device)
        own = where == "device" and self.device.type != "cpu"
        self._gen = make_generator(seed, self.device if own else "cpu")
        self._draw_shape = (1, *self.shape[1:]) if shared else self.shape
        self._pin = self.device.type == "cuda" and not own
        self._pool = self._ahead = None
        if self.device.type != "cpu" and not own:   # draw on the CPU one step ahead
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pid-noise")
            self._ahead = self._pool.submit(self._draw, "cpu")

    def _draw(self, device) -> torch.Tensor:
        return torch.randn(self._draw_shape, generator=self._gen, dtype=torch.float32, device=device,
                           pin_memory=self._pin and torch.device(device).type == "cpu")

    def next(self, into: torch.Tensor | None = None) -> torch.Tensor:
        """The next draw, written into ``into`` (a dead fp32 buffer of ``shape`` on ``device``) if given."""
        if self._pool is None and self._draw_shape == self.shape:   # the values randn gives, in place
            into = torch.empty(self.shape, dtype=torch.float32, device=self.device) if into is None else into
            return into.normal_(generator=self._gen)
        if self._pool is not None:
            draw, self._ahead = self._ahead.result(), self._pool.submit(self._draw, "cpu")
        else:
            draw = self._draw(self._gen.device)
        if into is None and draw.shape == self.shape and draw.device == self.device:
            return draw
        if into is None:
            into = torch.empty(self.shape, dtype=torch.float32, device=self.device)
        return into.copy_(draw.expand(self.shape), non_blocking=self._pin)

    def close(self) -> None:
        if self._pool is not None:
            self._ahead.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "Noise":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

