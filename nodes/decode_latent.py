"""PiD Decode Latent: LATENT (finished, or stopped early with leftover noise) -> 4x IMAGE."""

from __future__ import annotations

from ..pid_core.decoding import color_check
from ..pid_core.decoding.color_anchor import anchor_colors as anchor_to
from ..pid_core.decoding.sizing import MAX_NODE_SIDE, fit_long_side
from . import host, node_base, pipeline
from .resolve import latent_format as resolve_format


class PiDDecodeLatent(node_base.ImageNode):
    DESCRIPTION = (
        "Decodes an LDM latent straight to pixels at 4x its VAE resolution with PiD (replaces VAE "
        "Decode + upscaler). The latent may be finished (sigma 0) or stopped early by "
        "KSamplerAdvanced with leftover noise (wire PiD Stop Sigma into sigma). 4 network steps, "
        "shown as live previews. With the LDM's VAE connected, color_report says how far PiD's "
        "colours are from the VAE decode, and anchor_colors can pin them to it.")
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "color_report")
    OUTPUT_TOOLTIPS = ("Decoded image, [B, H, W, 3] in 0..1, H and W = latent size x 32 "
                       "(x64 for FLUX.2) unless output_long_side is set.",
                       "How far PiD's colours are from the VAE decode of the same latent: mean ΔE "
                       "(CIELAB) and chroma shift of the low frequencies, per shadows/midtones/"
                       "highlights, and a verdict. Says 'no colour check' when no vae is connected.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pid_model": node_base.PID_MODEL,
                "latent": ("LATENT", {"tooltip": (
                    "The latent to decode: from KSampler / KSamplerAdvanced, VAE Encode or Load "
                    "Latent. Must come from the LDM family this PiD checkpoint was trained on.")}),
                "sigma": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.0001,
                                    "round": False, "tooltip": (
                    "Noise level the latent sits at, in the LDM's own sigma units: 0 for a finished "
                    "latent; for a latent from KSamplerAdvanced with return_with_leftover_noise, "
                    "connect PiD Stop Sigma. Flow models (FLUX, SD3, Qwen, Z-Image): 0..1. SDXL: "
                    "0..~14.6 (VE sigma, converted inside).")}),
                "prompt": node_base.PROMPT,
                "seed": node_base.SEED,
                "steps": node_base.STEPS,
                "latent_format": node_base.LATENT_FORMAT,
                "output_long_side": ("INT", {"default": 0, "min": 0, "max": MAX_NODE_SIDE, "step": 16,
                                             "tooltip": (
                    "0 = native size (latent x 32, or x 64 for FLUX.2; e.g. 128x128 -> 4096). "
                    "Otherwise the output's long side in px (multiple of 16, aspect kept). Inside "
                    "the checkpoint's range (2k: 1536..2688, 2kto4k: 1536..4096) it decodes whole; "
                    "larger outputs are tiled, the canvas in system RAM (about 35 bytes per output "
                    "pixel: 16384 x 16384 needs about 9 GB). PiD Size lists the trained sizes.")}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": (
                    "Optional: the LDM that made the latent (same MODEL as the KSampler). Read to "
                    "pick the latent format when latent_format is auto, and for the noise frame of "
                    "a stopped latent (flow or VE, from the model's sampling type).")}),
                "vae": ("VAE", {"tooltip": (
                    "Optional: the LDM's VAE. The latent is then also decoded by it, at the VAE's "
                    "own size (1/4 of PiD's output: colours need no more, and it costs 1/16 of "
                    "a full-size decode), to check PiD's colours against it (color_report) and, "
                    "with anchor_colors, to anchor them. Meaningful for finished latents (sigma "
                    "0) or a low sigma: the VAE decodes the latent as it is.")}),
                "anchor_colors": ("BOOLEAN", {"default": False, "tooltip": (
                    "With a vae connected: replace the output's structure coarser than ~32 px "
                    "with the VAE decode's (PiD's detail is kept), fixing colour drift. Off = "
                    "raw PiD output (the report is made either way).")}),
                "noise": node_base.NOISE,
                "tile_size": ("INT", {"default": 0, "min": 0, "max": MAX_NODE_SIDE, "step": 16, "tooltip": (
                    "0 = automatic: whole image when it fits VRAM and the trained range, else "
                    "the largest tiles that do. Otherwise decode in tiles of this side in px "
                    "(multiple of 16, inside the checkpoint's trained range, e.g. 2048 to save "
                    "VRAM); each step blends the tiles on one canvas.")}),
            },
        }

    @node_base.explains_errors
    def decode(self, pid_model, latent, sigma, prompt, seed, steps, latent_format="auto",
               output_long_side=0, model=None, vae=None, anchor_colors=False, noise="per image", tile_size=0):
        dec = pid_model.decoder
        samples = latent["samples"]
        fmt, frame = resolve_format(latent_format, dec.info, samples, model=model)
        size = None
        if output_long_side:
            f = dec.info.output_factor
            size = fit_long_side((samples.shape[-2] * f, samples.shape[-1] * f), output_long_side)
        image = pipeline.decode(pid_model, samples, sigma, prompt, seed=seed, steps=steps,
                                latent_format=fmt, noise_frame=frame, output_size=size, tile_size=tile_size,
                                shared_noise=node_base.NOISE_CHOICES[noise])
        check = anchored = None
        if vae is not None:
            reference = host.vae_decode(vae, samples).movedim(-1, 1)
            check = color_check.compare(image, reference)
            if anchor_colors:
                image = anchor_to(image, reference, inplace=True)
                anchored = color_check.compare(image, reference)
        report = color_check.NO_CHECK if check is None else color_check.describe(
            check, float(sigma), anchored, newer_checkpoint=dec.info.version != "v1.5")
        return image.movedim(1, -1).to(host.intermediate_device()), report
