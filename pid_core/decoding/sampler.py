"""The 4-step distilled sampler of nv-tlabs/PiD @2c8814c ``pid/_src/models/pid_distill_model_infer.py``
(``_get_t_list``, ``_student_sample_loop``): the time schedule, ``x0 = x - t v`` in float64, the
re-noise ``(1 - t) x0 + t eps`` in fp32, and the one loop. Times are plain Python numbers rounded to
fp32 (upstream's tensor values), so a step moves nothing between host and device.
"""

from __future__ import annotations

import numbers
import struct
from collections.abc import Callable

import torch

from ..errors import PiDInputError

T_LIST = (0.999, 0.866, 0.634, 0.342, 0.0)   # student schedule of the 4-step distilled nets
MAX_STEPS = len(T_LIST) - 1
# velocity_to_x0 works on row slices of about this many elements (its float64 temporaries stay
# small; elementwise maths, so the slicing changes no value).
X0_SLICE_ELEMENTS = 1 << 22


def fp32(t: float) -> float:
    """``t`` rounded to fp32 (the value an fp32 tensor holds), as a Python float."""
    return struct.unpack("f", struct.pack("f", t))[0]


# Times for n network calls, ending with 0: subsets of the 4-step list; one step is a single call at t = 1.
SCHEDULES = {1: (1.0, 0.0), **{n: tuple(fp32(T_LIST[round(i * MAX_STEPS / n)]) for i in range(n + 1))
                               for n in range(2, MAX_STEPS + 1)}}


def t_schedule(steps: int) -> tuple[float, ...]:
    """The times of a ``steps``-call decode (``SCHEDULES``)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise PiDInputError(
            f"steps={steps!r} is not supported: the distilled PiD decoders are trained for 4 steps; "
            f"choose 1, 2, 3 or 4 (4 recommended; more steps would repeat timesteps).", input_name="steps")
    return SCHEDULES[int(steps)]


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
    """``x0 = x - t v`` computed in float64 (t as its fp32 value) and returned in ``x``'s dtype."""
    t = fp32(t)
    out = torch.empty_like(x)
    for sl in rows_of(x):
        out[sl] = (x[sl].double() - t * v[sl].double()).to(x.dtype)
    return out


def renoise(x0: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 - t) x0 + t eps`` in fp32 with fp32 ``t``, as upstream rounds it; overwrites both
    (no full-size temporary) and returns ``x0``."""
    t = fp32(t)
    return x0.mul_(1 - t).add_(eps.mul_(t))


def sample(x0_of: Callable[[torch.Tensor, float], torch.Tensor], noise, times) -> torch.Tensor:
    """The loop: from the start noise, at each time ``t`` the denoiser ``x0_of(x, t)`` estimates
    the clean image (a new tensor), which is re-noised to the next time with a fresh draw written
    into the dead state; the last estimate is returned clamped to [-1, 1]. ``times``:
    ``t_schedule(steps)``; ``noise.next(into=None)``: the draws in upstream's order."""
    x = noise.next()
    for t, t_next in zip(times[:-1], times[1:]):
        x0 = x0_of(x, t)
        x = renoise(x0, noise.next(into=x), t_next) if t_next > 0 else x0
    return x.clamp_(-1, 1)
