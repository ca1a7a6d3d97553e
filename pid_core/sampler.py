"""The 4-step distilled SDE sampler (PID_SPEC 5), as pure functions.

Loop: ``v = f(x, t)``; ``x0 = x - t*v`` (in float64); re-noise ``x = (1-t_next)*x0 + t_next*eps``
with fresh noise between steps; the last step returns x0, clamped to [-1, 1]. The first input is the
unscaled noise at t = 0.999. One step is special: a single call at t = 1.0.

Noise comes from a CPU ``torch.Generator`` seeded once per decode and drawn in the order
noise, eps1, eps2, eps3, then moved to the compute device: results do not depend on the device.
(Upstream draws on a CUDA generator, whose stream differs from the CPU one; bit-parity with an
upstream GPU run is not a goal, the distribution is identical.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .errors import PiDInputError

T_LIST = (0.999, 0.866, 0.634, 0.342, 0.0)   # student schedule of the 4-step distilled nets
MAX_STEPS = len(T_LIST) - 1
MAX_SEED = 2**64 - 1


def t_schedule(steps: int) -> tuple[float, ...]:
    """Times for ``steps`` network calls (ending with 0): subsets of the 4-step list."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise PiDInputError(
            f"steps={steps!r} is not supported: the distilled PiD decoders are trained for 4 steps; "
            f"choose 1, 2, 3 or 4 (4 recommended; more steps would repeat timesteps).")
    if steps == 1:
        return (1.0, 0.0)
    idx = [round(i * MAX_STEPS / steps) for i in range(steps + 1)]
    return tuple(T_LIST[i] for i in idx)


def velocity_to_x0(x: torch.Tensor, t: float, v: torch.Tensor) -> torch.Tensor:
    """``x0 = x - t*v`` computed in float64 and returned in ``x``'s dtype."""
    return (x.double() - torch.tensor(t, dtype=torch.float32).double() * v.double()).to(x.dtype)


def renoise(x0: torch.Tensor, eps: torch.Tensor, t_next: float) -> torch.Tensor:
    """``(1 - t) * x0 + t * eps`` with ``t`` as an fp32 scalar tensor, as upstream."""
    t = torch.tensor(t_next, dtype=torch.float32, device=x0.device)
    return (1 - t) * x0 + t * eps


def make_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PiDInputError(f"seed={seed!r} is out of range; expected an integer in 0..2^64-1.")
    return torch.Generator(device="cpu").manual_seed(seed)


def draw_noise(shape: Sequence[int], generator: torch.Generator, device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def sample(velocity: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, steps: int = 4,
           next_noise: Callable[[int], torch.Tensor] | None = None,
           callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run the distilled loop from ``noise`` (fp32). ``velocity(x, t)`` calls the network.

    ``next_noise(k)`` returns the k-th re-noise draw (k = 0 after the first step); ``callback(step,
    total)`` runs after every network call and may raise to abort. Returns x0 clamped to [-1, 1].
    """
    ts = t_schedule(steps)
    total = len(ts) - 1
    x = noise.float()
    for i in range(total):
        t_cur, t_next = ts[i], ts[i + 1]
        x0 = velocity_to_x0(x, t_cur, velocity(x, t_cur))
        if t_next > 0:
            if next_noise is None:
                raise PiDInputError("sample() needs next_noise for multi-step schedules")
            x = renoise(x0, next_noise(i).to(x0), t_next)
        else:
            x = x0
        if callback is not None:
            callback(i + 1, total)
    return x.clamp(-1, 1)
