"""PiD Stop Sigma: the sigma a KSamplerAdvanced-stopped latent sits at, without ComfyUI.

The fakes below rebuild ComfyUI's sampling objects (comfy/model_sampling.py @ a125cd84:
ModelSamplingFlux + CONST, ModelSamplingDiscreteFlow + CONST, ModelSamplingDiscrete + EPS).
Expected values were computed with the REAL classes in the host venv
(comfy.model_base.model_sampling(supported_models.Flux/SD3/SDXL) and comfy.samplers.
calculate_sigmas, with KSampler's discard-penultimate rule and KSampler.sample's truncation);
they match PID_SPEC §4 (Flux simple 28 steps K=24 0.3449, SD3 K=24 0.3336).
"""

from __future__ import annotations

import math

import pytest
import torch
from node_helpers import FakeModel, pack_module

schedule = pack_module("nodes.schedule")
errors = pack_module("pid_core.errors")
StopNode = pack_module("nodes.stop_sigma").PiDStopSigma


class CONST:  # names matter: the frame is read from the class hierarchy, as in ComfyUI
    pass


class EPS:
    pass


class FluxSampling(CONST):
    """comfy ModelSamplingFlux: 10000-entry table of flux_time_shift(shift, 1, t)."""

    def __init__(self, shift=1.15, timesteps=10000):
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)

    sigma_min = property(lambda self: self.sigmas[0])
    sigma_max = property(lambda self: self.sigmas[-1])

    def timestep(self, sigma):
        return sigma

    def sigma(self, t):
        return math.exp(self.shift) / (math.exp(self.shift) + (1 / t - 1) ** 1.0)


class DiscreteFlowSampling(CONST):
    """comfy ModelSamplingDiscreteFlow (SD3: shift 3, multiplier 1000)."""

    def __init__(self, shift=3.0, multiplier=1000, timesteps=1000):
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)

    sigma_min = property(lambda self: self.sigmas[0])
    sigma_max = property(lambda self: self.sigmas[-1])

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        t = timestep / self.multiplier
        return self.shift * t / (1 + (self.shift - 1) * t)


class SDXLSampling(EPS):
    """comfy ModelSamplingDiscrete with SDXL's linear beta schedule 0.00085..0.012, 1000 steps."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        ac = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - ac) / ac) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    sigma_min = property(lambda self: self.sigmas[0])
    sigma_max = property(lambda self: self.sigmas[-1])

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()


DISCARD = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


@pytest.mark.parametrize("sampling, sampler, scheduler, steps, end, expected", [
    (FluxSampling(), "euler", "simple", 28, 24, 0.344928),       # PID_SPEC §4: 0.3449
    (FluxSampling(), "euler", "sgm_uniform", 28, 24, 0.345348),
    (FluxSampling(), "uni_pc", "simple", 28, 24, 0.396993),      # one extra step, penultimate dropped
    (FluxSampling(), "euler", "normal", 28, 20, 0.525327),
    (FluxSampling(), "euler", "karras", 28, 24, 0.001426),
    (DiscreteFlowSampling(3.0), "euler", "simple", 28, 24, 0.333593),  # PID_SPEC §4: 0.3336
    (DiscreteFlowSampling(3.0), "euler", "normal", 28, 24, 0.278049),
    (DiscreteFlowSampling(3.1, multiplier=1.0), "euler", "simple", 50, 44, 0.297125),  # Qwen
    (SDXLSampling(), "euler", "simple", 30, 26, 0.417879),
    (SDXLSampling(), "euler", "normal", 30, 26, 0.351467),
    (SDXLSampling(), "dpmpp_2m", "karras", 30, 26, 0.076639),
    (SDXLSampling(), "euler", "sgm_uniform", 30, 26, 0.418326),
])
def test_stop_sigma_matches_comfyui(sampling, sampler, scheduler, steps, end, expected):
    result = schedule.stop_sigma(sampling, scheduler, steps, end, sampler_name=sampler,
                                 discard_penultimate=DISCARD)
    assert result.sigma == pytest.approx(expected, abs=2e-6)


def test_frames_flow_and_ve():
    """Flow (CONST) samplers return x_t / (1 - s) in ComfyUI: "comfy_flow"; EPS ones x0 + s eps."""
    assert schedule.noise_frame(FluxSampling()) == "comfy_flow"
    assert schedule.noise_frame(DiscreteFlowSampling()) == "comfy_flow"
    assert schedule.noise_frame(SDXLSampling()) == "ve"
    note = schedule.stop_sigma(SDXLSampling(), "normal", 30, 26).note()
    assert "VE frame" in note and "trained in" in note
    note = schedule.stop_sigma(FluxSampling(), "simple", 28, 24).note()
    assert "flow-matching" in note and "x_t/(1-s)" in note


@pytest.mark.parametrize("end", [28, 29, 10000])
def test_finished_latent_has_sigma_zero(end):
    assert schedule.stop_sigma(FluxSampling(), "simple", 28, end).sigma == 0.0


def test_leftover_noise_disabled_gives_zero():
    result = schedule.stop_sigma(FluxSampling(), "simple", 28, 24, leftover_noise=False)
    assert result.sigma == 0.0 and result.index == 24


def test_explicit_sigmas_use_index_or_last_entry():
    sig = torch.tensor([1.0, 0.8, 0.5, 0.3])
    assert schedule.from_sigmas(sig, 2).sigma == pytest.approx(0.5)
    assert schedule.from_sigmas(sig, 10000).sigma == pytest.approx(0.3)
    with pytest.raises(errors.PiDInputError, match="non-empty 1-D"):
        schedule.from_sigmas(torch.tensor([]), 0)


def test_bad_arguments_are_reported():
    with pytest.raises(errors.PiDInputError, match="steps must be >= 1"):
        schedule.stop_sigma(FluxSampling(), "simple", 0, 0)
    with pytest.raises(errors.PiDInputError, match="needs ComfyUI's own implementation"):
        schedule.stop_sigma(FluxSampling(), "beta", 28, 24)


def test_node_uses_model_sampling_and_sigmas_input():
    node = StopNode()
    sigma, note = node.compute(FakeModel("Flux", FluxSampling()), "euler", "simple", 28, 24, "enable")
    assert sigma == pytest.approx(0.344928, abs=2e-6) and "flow" in note
    sigma, _ = node.compute(FakeModel("SDXL", SDXLSampling()), "euler", "normal", 30, 26, "enable")
    assert sigma == pytest.approx(0.351467, abs=2e-6)
    sigma, _ = node.compute(FakeModel("Flux", FluxSampling()), "euler", "simple", 28, 10000,
                            "enable", sigmas=torch.tensor([1.0, 0.7, 0.42]))
    assert sigma == pytest.approx(0.42)
