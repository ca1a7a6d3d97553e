"""The 4-step distilled SDE sampler, as pure functions, and the one sampling loop.

nv-tlabs/PiD @2c8814c ``pid/_src/models/pid_distill_model_infer.py`` (``_get_t_list``,
``_student_sample_loop``): ``x0 = x - t*v`` (in float64); re-noise
``x = (1-t_next)*x0 + t_next*eps`` with fresh noise between steps; the last step returns x0,
clamped to [-1, 1]. The first input is the unscaled noise at t = 0.999; one step is special:
a single call at t = 1.0.

:func:`sample` is the only loop. It asks a *denoiser* ``x0_fn(x, t, tick)`` for the clean-image
estimate at each step: a whole-image decode passes the network (``velocity_to_x0`` of one call),
a tiled decode passes a function that runs the tiles and blends their estimates on a canvas
(``tiling.TiledDenoiser``). The denoiser calls ``tick(x0, at)`` after every network call with
the estimate it just made (the whole image, or one tile at its pixel offset), so progress,
interruption and live previews (``preview.PreviewCanvas``) live here, once.

Noise comes from a CPU ``torch.Generator`` seeded once per decode and drawn in the order
noise, eps1, eps2, eps3, then moved to the compute device: results do not depend on the device
(``NoiseSource`` draws ahead on a worker thread so an accelerator does not wait for it).
Upstream draws on a CUDA generator, whose stream differs from the CPU one; ``NoiseSource``'s
``"device"`` mode draws there instead (the same stream as upstream on CUDA, device-dependent).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..errors import PiDInputError
from .preview import DEFAULT_PREVIEW_SIDE, PREVIEW_BUDGET, PreviewCanvas

T_LIST = (0.999, 0.866, 0.634, 0.342, 0.0)   # student schedule of the 4-step distilled nets
MAX_STEPS = len(T_LIST) - 1
MAX_SEED = 2**64 - 1


def t_schedule(steps: int) -> tuple[float, ...]:
    """Times for ``steps`` network calls (ending with 0): subsets of the 4-step list."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise PiDInputError(
            f"steps={steps!r} is not supported: the distilled PiD decoders are trained for 4 steps; "
            f"choose 1, 2, 3 or 4 (4 recommended; more steps would repeat timesteps).", input_name="steps")
    steps = int(steps)
    if steps == 1:
        return (1.0, 0.0)
    idx = [round(i * MAX_STEPS / steps) for i in range(steps + 1)]
    return tuple(T_LIST[i] for i in idx)


# velocity_to_x0 and renoise work on row slices of about this many elements, so their
# temporaries stay small (elementwise maths: the slicing changes no value).
X0_SLICE_ELEMENTS = 1 << 22


def rows_of(x: torch.Tensor):
    """Index tuples covering ``x`` in slices of whole rows of about ``X0_SLICE_ELEMENTS``."""
    if x.dim() < 2 or x.numel() <= X0_SLICE_ELEMENTS:
        yield (...,)
        return
    rows = x.shape[-2]
    step = max(1, X0_SLICE_ELEMENTS // max(1, x.numel() // rows))
    for i in range(0, rows, step):
        yield (..., slice(i, i + step), slice(None))


def velocity_to_x0(x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
    """``x0 = x - t*v`` computed in float64 and returned in ``x``'s dtype."""
    tt = torch.tensor(t, dtype=torch.float32).double()
    if x.dim() < 2 or x.numel() <= X0_SLICE_ELEMENTS:
        return (x.double() - tt * v.double()).to(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for sl in rows_of(x):
        out[sl] = (x[sl].double() - tt * v[sl].double()).to(x.dtype)
    return out


def renoise(x0: torch.Tensor, eps: torch.Tensor, t_next: float, inplace: bool = False) -> torch.Tensor:
    """``(1 - t) * x0 + t * eps`` with ``t`` as an fp32 scalar tensor, as upstream.

    ``inplace=True`` overwrites ``x0`` (same values, no full-size temporary: ``t * eps`` is
    formed in row slices).
    """
    t = torch.tensor(t_next, dtype=torch.float32, device=x0.device)
    if not inplace:
        return (1 - t) * x0 + t * eps
    for sl in rows_of(x0):
        x0[sl].mul_(1 - t).add_(t * eps[sl])
    return x0


def make_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise PiDInputError(
            f"seed={seed!r} is out of range; expected a whole number in 0..2^64-1 "
            f"(0..18446744073709551615). Use a non-negative integer seed.", input_name="seed")
    return torch.Generator(device="cpu").manual_seed(int(seed))


NOISE_DEVICES = ("cpu", "device")


def check_noise_device(mode: str) -> str:
    if mode not in NOISE_DEVICES:
        raise PiDInputError(f"noise_device={mode!r} is not supported; choose 'cpu' (same image on "
                            f"every device) or 'device' (draw on the compute device, faster).")
    return mode


class NoiseSource:
    """The Gaussian draws of one decode, in upstream order: the first ``next()`` is the start
    noise, the k-th after it the k-th re-noise draw; each ``shape``, fp32, delivered on ``device``.

    ``mode="cpu"`` (default): one CPU generator seeded with ``seed``, so a seed gives the same
    image on every device. CPU sampling is slow (about 0.1 s per 2048^2 draw), so on an
    accelerator the draws run on a worker thread one step ahead, into pinned memory, while the
    network computes; only the first draw is waited for.
    ``mode="device"``: a generator on ``device`` itself (no waiting; on CUDA the same stream as
    upstream's ``torch.Generator("cuda")`` for the same seed, but results then depend on the
    device). Use as a context manager (or call ``close``) so an aborted decode stops the worker.
    """

    def __init__(self, seed: int, shape: Sequence[int], device, mode: str = "cpu"):
        check_noise_device(mode)
        self.shape, self.device = tuple(int(v) for v in shape), torch.device(device)
        on_device = mode == "device" and self.device.type != "cpu"
        self._gen = make_generator(seed)  # validates the seed
        if on_device:
            self._gen = torch.Generator(device=self.device).manual_seed(int(seed))
        self._gen_device = self.device if on_device else torch.device("cpu")
        self._pin = self.device.type == "cuda" and not on_device
        self._pool = None
        self._pending: list[Future] = []
        if self.device.type != "cpu" and not on_device:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pid-noise")
            self._pending = [self._pool.submit(self._draw) for _ in range(2)]

    def _draw(self) -> torch.Tensor:
        buf = torch.empty(self.shape, dtype=torch.float32, device=self._gen_device, pin_memory=self._pin)
        return torch.randn(self.shape, generator=self._gen, dtype=torch.float32, out=buf)

    def next(self) -> torch.Tensor:
        """The next draw, on ``device`` (call in order: noise, eps1, eps2, ...)."""
        if self._pool is None:
            return self._draw().to(self.device)
        t = self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._draw))  # keep one draw in flight
        return t.to(self.device, non_blocking=self._pin)

    def next_into(self, buf: torch.Tensor) -> torch.Tensor:
        """The next draw written into ``buf`` (fp32, ``shape``, on ``device``), which the caller no
        longer needs: the same values as ``next()`` without a new full-size allocation."""
        if tuple(buf.shape) != self.shape or buf.dtype != torch.float32 or buf.device != self.device:
            return self.next()
        if self._pool is None and self._gen_device == buf.device:
            return torch.randn(self.shape, generator=self._gen, dtype=torch.float32, out=buf)
        return buf.copy_(self.next(), non_blocking=self._pin)

    def close(self) -> None:
        if self._pool is not None:
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True)
            self._pending, self._pool = [], None

    def __enter__(self) -> "NoiseSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample(x0_fn: Callable[..., torch.Tensor], noise, steps: int = 4,
           callback: Callable[[int, int], None] | None = None, calls_per_step: int = 1,
           preview: Callable[[torch.Tensor], None] | None = None,
           preview_side: int = DEFAULT_PREVIEW_SIDE,
           preview_budget: float | None = PREVIEW_BUDGET) -> torch.Tensor:
    """The distilled loop. Returns x0 clamped to [-1, 1] (fp32, where ``noise`` delivers).

    ``x0_fn(x, t, tick)`` returns the clean-image estimate of the state ``x`` at time ``t`` and
    calls ``tick(x0_part, at)`` after each of its ``calls_per_step`` network calls, with the
    estimate that call made (the whole image, or a tile at pixel offset ``at = (row, col)``;
    ``tick()`` without one is allowed). ``noise.next()`` returns the draws in order (start
    noise, eps1, ...); a source with ``next_into(buf)`` gets the dead state to draw into.
    ``callback(done, total)`` runs on every tick (``total = steps x calls_per_step``) and may
    raise to abort. ``preview(image)``, when given, runs on every tick just before the callback
    with a ``[h, w, 3]`` uint8 CPU picture of the image so far (first of the batch, long side at
    most ``preview_side`` px), as often as ``preview_budget`` allows (``preview.PreviewCanvas``;
    None: on every tick).
    """
    ts = t_schedule(steps)
    n_steps = len(ts) - 1
    total, done = n_steps * int(calls_per_step), 0
    canvas = None

    def tick(x0_part: torch.Tensor | None = None, at: tuple[int, int] = (0, 0)) -> None:
        nonlocal done
        done += 1
        if canvas is not None and x0_part is not None:
            canvas.land(x0_part, at)
        if callback is not None:
            callback(done, total)

    x = noise.next().float()
    if preview is not None:
        canvas = PreviewCanvas(x.shape[-2:], preview_side, preview, preview_budget)
    draw_into = getattr(noise, "next_into", None)
    for i in range(n_steps):
        t_cur, t_next = ts[i], ts[i + 1]
        x0 = x0_fn(x, t_cur, tick)
        if t_next > 0:
            # the state is dead once x0 exists: draw the next noise into it, or free it first
            reuse = draw_into is not None and x is not x0
            buf, x = (x if reuse else None), None
            eps = draw_into(buf) if reuse else noise.next()
            buf = None
            x = renoise(x0, eps.to(x0), t_next, inplace=True)
            del eps
        else:
            x = x0
        del x0
    return x.clamp_(-1, 1)
