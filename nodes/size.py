"""PiD Size: pick a size the connected PiD checkpoint was trained at -> width/height for the LDM's
empty latent, so the latent decodes whole (no tiling) at that size."""

from __future__ import annotations

from ..pid_core.decoding.sizing import MAX_NODE_SIDE, choose_size, parse_size_label, size_presets
from . import node_base

CUSTOM = "custom (width x height below)"


class PiDSize:
    CATEGORY = node_base.CATEGORY
    DESCRIPTION = (
        "Sizes PiD decodes best: the trained sizes and aspect ratios of each checkpoint kind (2k: "
        "the 2048-area buckets; 2kto4k and v1.5: the 2K..4K multi-resolution grid). Outputs the "
        "width and height to give Empty Latent Image (or the SD3/FLUX empty-latent nodes): the "
        "LDM's pixel size, 1/4 of PiD's output, so PiD Decode Latent (output_long_side 0) returns "
        "exactly the chosen size. The info output says whether the connected checkpoint decodes "
        "it whole or in tiles.")
    FUNCTION = "size"
    RETURN_TYPES = ("INT", "INT", "STRING")
    RETURN_NAMES = ("width", "height", "info")
    OUTPUT_TOOLTIPS = (
        "LDM pixel width for Empty Latent Image (= PiD output width / 4).",
        "LDM pixel height for Empty Latent Image (= PiD output height / 4).",
        "The PiD output size, the latent size, and whether this checkpoint decodes it whole (a "
        "trained size, or inside its trained range) or tiled (beyond it).")

    @classmethod
    def INPUT_TYPES(cls):
        side = {"min": 512, "max": MAX_NODE_SIDE, "step": 64}
        return {
            "required": {
                "pid_model": node_base.PID_MODEL,
                "size": ([*size_presets(), CUSTOM], {"default": size_presets()[0], "tooltip": (
                    "PiD output size W x H (aspect). Pick one of your checkpoint's kind (2k: for "
                    "2k checkpoints; 2kto4k: for 2kto4k and v1.5 checkpoints); another kind's "
                    "size still works and the info output says how it will decode. custom = the "
                    "two values below.")}),
                "custom_width": ("INT", {"default": 4096, **side, "tooltip": (
                    "Only for size = custom: PiD output width in px (snapped to 32, or 64 for "
                    "FLUX.2). Beyond the trained sides it is decoded in tiles.")}),
                "custom_height": ("INT", {"default": 4096, **side, "tooltip": (
                    "Only for size = custom: PiD output height in px (snapped like the width). "
                    "The short side must reach the checkpoint's trained minimum (1536).")}),
            },
        }

    @node_base.explains_errors
    def size(self, pid_model, size, custom_width=4096, custom_height=4096):
        info = pid_model.info
        hw = (custom_height, custom_width) if size == CUSTOM else parse_size_label(size)[1]
        choice = choose_size(info, hw)
        (h, w), (lh, lw), (zh, zw) = choice.output, choice.ldm, choice.latent
        text = (f"PiD output {w}x{h} (W x H): {choice.note}\n"
                f"empty latent: width {lw}, height {lh} (latent {zw}x{zh}); decode with "
                f"output_long_side 0.")
        return lw, lh, text
