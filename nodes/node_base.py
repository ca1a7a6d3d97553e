"""What the PiD node classes share: the category, the decode nodes' IMAGE output and the seed and
steps widgets (one definition each, limits from pid_core)."""

from __future__ import annotations

from ..pid_core.sampler import MAX_SEED, MAX_STEPS

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
