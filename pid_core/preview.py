"""Live previews: a small picture of the image being decoded, updated as estimates land.

``sampler.sample`` keeps one :class:`PreviewCanvas` per decode when the caller asks for
previews. Every network call reports the clean-image estimate it made — the whole image, or one
tile at its pixel offset — and the canvas area-downsamples just that region to the preview
scale (long side at most ``max_side`` px), pastes it and hands the small picture to the
caller's ``sink``. A tiled decode therefore shows its canvas filling in tile by tile, each step
over the previous step's picture. The cost is one area-downsample of the region just computed
on the device it was computed on, plus a copy of at most ``max_side^2`` pixels to the CPU;
nothing full-size is allocated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Long side of a preview in px: ComfyUI's default ``--preview-size`` (comfy/cli_args.py).
DEFAULT_PREVIEW_SIDE = 512


def preview_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(h, w)`` of the preview of an image of ``size``: aspect kept, long side <= ``max_side``."""
    h, w = int(size[0]), int(size[1])
    s = min(1.0, max(1, int(max_side)) / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


class PreviewCanvas:
    """The preview of one decode: ``[3, h, w]`` float32 on the CPU in [0, 1] (first image of the
    batch), black until estimates land. ``sink(image)`` gets the canvas itself after every
    :meth:`land`; it is valid until the next call (copy it to keep it)."""

    def __init__(self, size: tuple[int, int], max_side: int, sink: Callable[[torch.Tensor], None]):
        self.full = (int(size[0]), int(size[1]))
        self.size = preview_size(self.full, max_side)
        self.image = torch.zeros(3, *self.size)
        self.sink = sink

    def _span(self, start: int, length: int, axis: int) -> tuple[int, int]:
        full, small = self.full[axis], self.size[axis]
        a = min(small - 1, round(start * small / full))
        return a, max(a + 1, min(small, round((start + length) * small / full)))

    def land(self, x0: torch.Tensor, at: tuple[int, int] = (0, 0)) -> None:
        """Paste the estimate ``x0`` ``[B, 3, h, w]`` (in [-1, 1]) of the region at pixel offset
        ``at = (row, col)``, then show the canvas."""
        r0, r1 = self._span(at[0], x0.shape[-2], 0)
        c0, c1 = self._span(at[1], x0.shape[-1], 1)
        part = x0[:1, :3].float().clamp(-1, 1)       # as the final image is
        if tuple(part.shape[-2:]) != (r1 - r0, c1 - c0):
            part = F.interpolate(part, size=(r1 - r0, c1 - c0), mode="area")
        self.image[:, r0:r1, c0:c1] = part[0].add_(1).div_(2).cpu()
        self.sink(self.image)
