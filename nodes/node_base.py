"""What the PiD node classes share: the category, the decode nodes' IMAGE output, the seed and
steps widgets (one definition each, limits from pid_core) and how an error names its fix in a graph."""

from __future__ import annotations

import functools

from ..pid_core.decoding.noise import MAX_SEED
from ..pid_core.decoding.sampler import MAX_STEPS
from ..pid_core.errors import PiDError

SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": (
    "Seed of PiD's own noise (0..2^64-1). Changes fine texture only; the same seed gives the same "
    "image on every device.")})
STEPS = ("INT", {"default": MAX_STEPS, "min": 1, "max": MAX_STEPS, "tooltip": (
    "PiD network calls, 1..4. The distilled checkpoints are trained for 4 steps; fewer is faster "
    "and softer, more would repeat timesteps.")})

CATEGORY = "PiD"


class ImageNode:
    """Base of the nodes that return one IMAGE (ComfyUI reads these class attributes)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)


# How to change each input a pid_core error names (``PiDError.input_name``) in a ComfyUI graph.
FIXES = {
    "checkpoint": "in PiD Load Model pick another checkpoint: PiD files named pid_* in "
                  "ComfyUI/models/diffusion_models/, or any decoder in ComfyUI/models/pid/",
    "latent_format": "set latent_format on the PiD node, or connect the LDM's MODEL to its model input",
    "latent": "connect the LATENT of the LDM's sampler, VAE Encode or Load Latent",
    "dtype": "set dtype to bf16 or fp32 in PiD Load Model",
    "text": "select gemma_2_2b_it_elm_bf16.safetensors (ComfyUI/models/text_encoders/) as text_encoder in "
            "PiD Load Model, or connect a Gemma-2-2B CLIP",
    "sigma": "connect PiD Stop Sigma to sigma (0 for a finished latent)",
    "output_size": "change output_long_side (PiD Decode Latent) or long_side (PiD Upscale)",
    "tile": "change tile_size (0 = automatic)",
}


def explains_errors(run):
    """Decorate a node's FUNCTION: a pid_core error that names its input gets the graph's fix appended."""
    @functools.wraps(run)
    def node_function(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except PiDError as exc:
            fix = FIXES.get(exc.input_name or "")
            note = f" (ComfyUI: {fix})"
            if fix and exc.args and isinstance(exc.args[0], str) and not exc.args[0].endswith(note):
                exc.args = (exc.args[0] + note, *exc.args[1:])
            raise
    return node_function
