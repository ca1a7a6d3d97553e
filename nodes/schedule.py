"""The sigma a latent sits at after ``KSamplerAdvanced`` stopped at ``end_at_step``, as ComfyUI
computes it (comfy/samplers.py @ a125cd84, ``KSampler.calculate_sigmas`` / ``KSampler.sample``): the
schedule from the model's own sampling object, one extra step with the penultimate sigma dropped
for the samplers ComfyUI treats that way, ``sigmas[:end_at_step + 1]``, and 0 when leftover noise
is disabled. Without ComfyUI (tests, scripts) a few schedulers are re-implemented from that file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..pid_core.decoding.latents import COMFY_FLOW, VE
from ..pid_core.errors import PiDInputError


@dataclass(frozen=True)
class StopSigma:
    sigma: float
    frame: str      # the stopped LATENT's noise frame: "comfy_flow" (x_t / (1-s)) or "ve" (x0 + s eps)
    index: int      # position in the (possibly discarded) schedule
    schedule_len: int

    def note(self) -> str:
        where = (f"sigma {self.sigma:.6g} = schedule[{self.index}] of {self.schedule_len - 1} "
                 f"steps")
        if self.frame == COMFY_FLOW:
            return (f"{where}; flow-matching model (0 = clean, 1 = noise): ComfyUI returns the "
                    f"latent as x_t/(1-s), PiD Decode Latent scales it back to x_t.")
        return (f"{where}; VE frame of an EPS/v-prediction model (SDXL-style, 0..~14.6): "
                f"PiD Decode Latent maps it to the frame its checkpoint was trained in.")


def noise_frame(model_sampling) -> str:
    """The frame of a LATENT a ComfyUI sampler returns for this sampling object.

    CONST (flow matching, comfy/model_sampling.py) divides its output by (1 - sigma)
    (``inverse_noise_scaling``): "comfy_flow". EPS, V_PREDICTION, X0 and COSMOS_RFLOW keep
    ``x0 + sigma * eps``: "ve". Unknown classes: by their sigma range.
    """
    names = {c.__name__ for c in type(model_sampling).__mro__}
    if "CONST" in names:
        return COMFY_FLOW
    if names & {"EPS", "V_PREDICTION", "EDM", "X0", "COSMOS_RFLOW"}:
        return VE
    return COMFY_FLOW if float(model_sampling.sigma_max) <= 1.0 + 1e-6 else VE


def stop_sigma(model_sampling, scheduler: str, steps: int, end_at_step: int, *,
               sampler_name: str = "euler", leftover_noise: bool = True,
               discard_penultimate: frozenset = frozenset(),
               calculate_sigmas: Optional[Callable] = None) -> StopSigma:
    """The sigma KSamplerAdvanced leaves the latent at (see module docstring)."""
    if steps < 1:
        raise PiDInputError(f"steps must be >= 1; got {steps}.")
    if end_at_step < 0:
        raise PiDInputError(f"end_at_step must be >= 0; got {end_at_step}.")
    n = steps + 1 if sampler_name in discard_penultimate else steps
    sigmas = (calculate_sigmas or fallback_calculate_sigmas)(model_sampling, scheduler, n)
    if sampler_name in discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return from_sigmas(sigmas, end_at_step, leftover_noise=leftover_noise,
                       frame=noise_frame(model_sampling))


def from_sigmas(sigmas: torch.Tensor, end_at_step: int, *, leftover_noise: bool = True,
                frame: str = COMFY_FLOW) -> StopSigma:
    """Stop sigma of an explicit SIGMAS schedule (a split's high half: its last entry)."""
    if sigmas.dim() != 1 or sigmas.numel() == 0:
        raise PiDInputError(f"SIGMAS must be a non-empty 1-D schedule; got shape "
                            f"{tuple(sigmas.shape)}.")
    last = sigmas.numel() - 1
    idx = min(end_at_step, last)
    value = float(sigmas[idx])
    if idx < last and not leftover_noise:
        value = 0.0  # ComfyUI forces the final sigma to 0 (an x0 prediction comes back)
    return StopSigma(value, frame, idx, sigmas.numel())


# ----------------------------------------------------------------------------- fallback
# Re-implementations of comfy/samplers.py schedulers for use without ComfyUI only.
def _simple(ms, steps):
    ss = len(ms.sigmas) / steps
    return [float(ms.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


def _normal(ms, steps, sgm=False):
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    return sigs + [0.0] if append_zero else sigs


def _karras(ms, steps, rho=7.0):
    ramp = torch.linspace(0, 1, steps)
    lo, hi = float(ms.sigma_min) ** (1 / rho), float(ms.sigma_max) ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).tolist() + [0.0]


_FALLBACK = {"simple": _simple, "normal": _normal, "karras": _karras,
             "sgm_uniform": lambda ms, n: _normal(ms, n, sgm=True)}
FALLBACK_SCHEDULERS = list(_FALLBACK)


def fallback_calculate_sigmas(model_sampling, scheduler: str, steps: int) -> torch.Tensor:
    if scheduler not in _FALLBACK:
        raise PiDInputError(
            f"scheduler '{scheduler}' needs ComfyUI's own implementation; outside ComfyUI only "
            f"{', '.join(FALLBACK_SCHEDULERS)} are available.")
    return torch.FloatTensor(_FALLBACK[scheduler](model_sampling, steps))
