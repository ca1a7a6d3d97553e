"""PiD Stop Sigma: the exact sigma a KSamplerAdvanced-stopped latent sits at."""

from __future__ import annotations

from . import host, node_base
from .schedule import FALLBACK_SCHEDULERS, from_sigmas, noise_frame, stop_sigma

_FALLBACK_SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "res_multistep", "uni_pc"]


class PiDStopSigma:
    DESCRIPTION = (
        "Computes the noise level (sigma) of a latent returned by KSamplerAdvanced with "
        "return_with_leftover_noise = enable, from the same MODEL, sampler, scheduler, steps and "
        "end_at_step, using the model's own sampling object (flow shift, ModelSampling* nodes and "
        "SDXL's schedule are honoured). Wire 'sigma' into PiD Decode Latent.")
    CATEGORY = node_base.CATEGORY
    FUNCTION = "compute"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("sigma", "note")
    OUTPUT_TOOLTIPS = (
        "Sigma of the stopped latent in the model's own units (flow: 0..1; SDXL/EPS: VE sigma). "
        "Connect to PiD Decode Latent's sigma.",
        "Which schedule entry it is and in which noise frame (flow or VE).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": (
                    "The same MODEL that goes into KSamplerAdvanced (after any ModelSampling* "
                    "node), so its sigma schedule is used.")}),
                "sampler_name": (host.sampler_names(_FALLBACK_SAMPLERS), {"tooltip": (
                    "Same as KSamplerAdvanced. Only matters for dpm_2, dpm_2_ancestral, uni_pc "
                    "and uni_pc_bh2, which ComfyUI runs on a schedule with one extra step.")}),
                "scheduler": (host.scheduler_names(FALLBACK_SCHEDULERS), {"tooltip": (
                    "Same scheduler as KSamplerAdvanced (e.g. simple for FLUX/SD3, normal or "
                    "karras for SDXL).")}),
                "steps": ("INT", {"default": 28, "min": 1, "max": 10000, "tooltip": (
                    "Same total steps as KSamplerAdvanced (1..10000).")}),
                "end_at_step": ("INT", {"default": 24, "min": 0, "max": 10000, "tooltip": (
                    "Same end_at_step as KSamplerAdvanced (0..10000). At or above steps the "
                    "latent is finished and sigma is 0.")}),
                "return_with_leftover_noise": (["enable", "disable"], {"tooltip": (
                    "Same as KSamplerAdvanced. disable makes ComfyUI return a denoised "
                    "prediction, whose sigma is 0.")}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": (
                    "Optional: the SIGMAS a custom sampler ran (e.g. the high half of "
                    "SplitSigmas). Then sigma = sigmas[end_at_step] (its last entry if "
                    "end_at_step is larger); sampler, scheduler, steps and leftover noise are ignored.")}),
            },
        }

    @node_base.explains_errors
    def compute(self, model, sampler_name, scheduler, steps, end_at_step,
                return_with_leftover_noise="enable", sigmas=None):
        sampling = host.model_sampling(model)
        leftover = return_with_leftover_noise == "enable"
        if sigmas is not None:
            result = from_sigmas(sigmas.detach().float().cpu(), end_at_step,
                                 frame=noise_frame(sampling))
        else:
            result = stop_sigma(sampling, scheduler, steps, end_at_step,
                                sampler_name=sampler_name, leftover_noise=leftover,
                                discard_penultimate=frozenset(host.discard_penultimate_samplers()),
                                calculate_sigmas=host.comfy_calculate_sigmas())
        return (result.sigma, result.note())
