"""PiD Decode Latent: LATENT (finished, or stopped early with leftover noise) -> 4x IMAGE."""

from __future__ import annotations

from ..pid_core.sizing import fit_long_side
from . import host
from .pid_types import PID_MODEL
from .resolve import LATENT_FORMAT_CHOICES, require_text_encoder
from .resolve import latent_format as resolve_format
from .text_encode import encode_prompt


class PiDDecodeLatent:
    DESCRIPTION = (
        "Decodes an LDM latent straight to pixels at 4x its VAE resolution with PiD (replaces VAE "
        "Decode + upscaler). The latent may be finished (sigma 0) or stopped early by "
        "KSamplerAdvanced with leftover noise (wire PiD Stop Sigma into sigma). 4 network steps.")
    CATEGORY = "PiD"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
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
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "control_after_generate": True, "tooltip": (
                    "Seed of PiD's own noise (0..2^64-1). Changes fine texture only.")}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 4, "tooltip": (
                    "PiD network calls, 1..4. The distilled checkpoints are trained for 4 steps; "
                    "fewer is faster and softer, more would repeat timesteps.")}),
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
                    "Optional: the LDM that made the latent (same MODEL as the KSampler). Only read "
                    "to pick the latent format when latent_format is auto.")}),
            },
        }

    def decode(self, pid_model, latent, sigma, prompt, seed, steps, latent_format="auto",
               output_long_side=0, model=None):
        dec = pid_model.decoder
        fmt = resolve_format(latent_format, dec.info, model=model)
        samples = latent["samples"]
        size = None
        if output_long_side:
            size = fit_long_side(dec.output_size_for(samples.shape[-2:]), output_long_side)
        text = encode_prompt(require_text_encoder(pid_model), [prompt])
        plan = dec.plan(samples.shape, size)  # whole image, or tiles when memory/size demand it
        device = host.load_for_inference(pid_model.patcher, dec.net, plan.estimate.activations)
        pbar = host.progress_bar(plan.progress_total(steps))
        image = dec.decode(samples.to(device), sigma, text.to(device), seed=seed, steps=steps,
                           latent_format=fmt, output_size=size, tile="auto",
                           callback=host.step_callback(pbar))
        return (image.movedim(1, -1).to(host.intermediate_device()),)
