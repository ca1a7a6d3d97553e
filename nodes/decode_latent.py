"""PiD Decode Latent: LATENT (finished, or stopped early with leftover noise) -> 4x IMAGE."""

from __future__ import annotations

from ..pid_core.sizing import fit_long_side
from . import host, node_base, pipeline
from .pid_types import PID_MODEL
from .resolve import LATENT_FORMAT_CHOICES
from .resolve import latent_format as resolve_format


class PiDDecodeLatent(node_base.ImageNode):
    DESCRIPTION = (
        "Decodes an LDM latent straight to pixels at 4x its VAE resolution with PiD (replaces VAE "
        "Decode + upscaler). The latent may be finished (sigma 0) or stopped early by "
        "KSamplerAdvanced with leftover noise (wire PiD Stop Sigma into sigma). 4 network steps.")
    FUNCTION = "decode"
    OUTPUT_TOOLTIPS = ("Decoded image, [B, H, W, 3] in 0..1, H and W = latent size x 32 "
                       "(x64 for FLUX.2) unless output_long_side is set.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pid_model": (PID_MODEL, {"tooltip": "From PiD Load Model."}),
                "latent": ("LATENT", {"tooltip": (
                    "The latent to decode: from KSampler / KSamplerAdvanced, VAE Encode or Load "
                    "Latent. Must come from the LDM family this PiD checkpoint was trained on.")}),
                "sigma": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.0001,
                                    "round": False, "tooltip": (
                    "Noise level the latent sits at, in the LDM's own sigma units: 0 for a finished "
                    "latent; for a latent from KSamplerAdvanced with return_with_leftover_noise, "
                    "connect PiD Stop Sigma. Flow models (FLUX, SD3, Qwen, Z-Image): 0..1. SDXL: "
                    "0..~14.6 (VE sigma, converted inside).")}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "The prompt that made the latent (PiD is text-conditioned; the same text "
                    "gives the most faithful detail). Empty is allowed.")}),
                "seed": node_base.SEED,
                "steps": node_base.STEPS,
                "latent_format": (LATENT_FORMAT_CHOICES, {"default": "auto", "tooltip": (
                    "How to normalise the LATENT. auto = the connected MODEL's format, else the "
                    "checkpoint's only format (SDXL, FLUX.2); 16-channel FLUX.1/Z-Image (flux), SD3 "
                    "and Qwen-Image latents look alike, so connect 'model' or choose.")}),
                "output_long_side": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 16,
                                             "tooltip": (
                    "0 = native size (latent x 32, or x 64 for FLUX.2; e.g. 128x128 -> 4096). "
                    "Otherwise the output's long side in px (multiple of 16, aspect kept); stay in "
                    "the checkpoint's range (2k: 1536..2688, 2kto4k: 1536..4096).")}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": (
                    "Optional: the LDM that made the latent (same MODEL as the KSampler). Read to "
                    "pick the latent format when latent_format is auto, and for the noise frame of "
                    "a stopped latent (flow or VE, from the model's sampling type).")}),
            },
        }

    def decode(self, pid_model, latent, sigma, prompt, seed, steps, latent_format="auto",
               output_long_side=0, model=None):
        dec = pid_model.decoder
        samples = latent["samples"]
        fmt, frame = resolve_format(latent_format, dec.info, samples, model=model)
        size = None
        if output_long_side:
            size = fit_long_side(dec.output_size_for(samples.shape[-2:]), output_long_side)
        image = pipeline.decode(pid_model, samples, sigma, prompt, seed=seed, steps=steps,
                                latent_format=fmt, noise_frame=frame, output_size=size)
        return (image.movedim(1, -1).to(host.intermediate_device()),)
