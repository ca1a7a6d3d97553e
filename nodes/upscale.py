"""PiD Upscale 2K->4K: an image (about 2K) -> VAE latent of a 1/4-size copy -> PiD at 4x."""

from __future__ import annotations

from ..pid_core.decoding.color_anchor import anchor_colors as anchor_to_source
from ..pid_core.decoding.sizing import MAX_NODE_SIDE, resize_bchw, upscale_sizes
from . import host, node_base, pipeline
from .resolve import latent_format as resolve_format

# Output sides snap to 64 px: the trained 2kto4k grid uses multiples of 64, and 64 is a multiple
# of every output factor (32 for 8x VAEs, 64 for FLUX.2), so the 1/4-size VAE input is whole.
SNAP = 64


class PiDUpscale2Kto4K(node_base.ImageNode):
    DESCRIPTION = (
        "Upscales an image (about 2K, any aspect) to 4K with PiD: a copy downscaled to 1/4 of the "
        "target is encoded with the VAE and decoded by PiD at 4x, then (by default) its colours "
        "and broad tones are anchored to the source. Use a 2kto4k or v1.5 PiD checkpoint and the "
        "VAE of its family.")
    FUNCTION = "upscale"
    OUTPUT_TOOLTIPS = ("Upscaled image [B, H, W, 3] in 0..1, long side = long_side (aspect kept, "
                       "sides multiples of 64).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pid_model": node_base.PID_MODEL,
                "image": ("IMAGE", {"tooltip": "The image to upscale (any size; ~2K is typical)."}),
                "vae": ("VAE", {"tooltip": (
                    "The VAE of the PiD checkpoint's family: FLUX.1 ae.safetensors for flux/v1.5, "
                    "SDXL VAE for sdxl, SD3 VAE for sd3, Qwen-Image VAE for qwenimage, FLUX.2 VAE "
                    "for flux2.")}),
                "prompt": node_base.PROMPT,
                "long_side": ("INT", {"default": 4096, "min": 1024, "max": MAX_NODE_SIDE, "step": 64,
                                      "tooltip": (
                    "Output long side in px (aspect kept, both sides snapped to multiples of 64). "
                    "2kto4k/v1.5 checkpoints are trained for 2048..4096; larger outputs are "
                    "decoded in tiles, with the canvas in system RAM (about 35 bytes per output "
                    "pixel: 16384 x 16384 needs about 9 GB).")}),
                "anchor_colors": ("BOOLEAN", {"default": True, "tooltip": (
                    "Keep colours and broad tones of the source: replace the output's structure "
                    "coarser than ~32 output px with the source's. Off = raw PiD output.")}),
                "seed": node_base.SEED,
                "steps": node_base.STEPS,
                "latent_format": node_base.LATENT_FORMAT,
            },
            "optional": {
                "noise": node_base.NOISE,
            },
        }

    @node_base.explains_errors
    def upscale(self, pid_model, image, vae, prompt, long_side, anchor_colors=True, seed=0,
                steps=4, latent_format="auto", noise="per image"):
        dec = pid_model.decoder
        fmt, _ = resolve_format(latent_format, dec.info, vae=vae)
        source = image.movedim(-1, 1)  # BHWC -> BCHW
        out_hw, small_hw = upscale_sizes(source.shape[-2:], long_side, dec.info.sr_scale, SNAP)
        small = resize_bchw(source, small_hw).clamp(0.0, 1.0)
        latent = host.vae_encode(vae, small.movedim(1, -1)[..., :3])
        out = pipeline.decode(pid_model, latent, 0.0, prompt, seed=seed, steps=steps,
                              latent_format=fmt, output_size=out_hw, shared_noise=node_base.NOISE_CHOICES[noise])
        if anchor_colors:
            out = anchor_to_source(out, source[:, :3], inplace=True)
        return (out.movedim(1, -1).to(host.intermediate_device()),)
