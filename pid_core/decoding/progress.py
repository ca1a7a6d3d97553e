"""Progress of a decode: after every network call, the count, a live preview, then the caller's
callback (which may raise to stop the decode). The preview is a small picture of the image so far:
each call's estimate (the whole image, or one tile at its offset) is area-downsampled to the preview
scale where it was computed and pasted, so the work is of preview size whatever the image size;
previews are rationed to ``PREVIEW_BUDGET`` of the decode's time (the only host syncs of a step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


class Progress:
    """The one hook of a decode, ticked after each network call (``total`` calls in all)."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None,
                 canvas: "PreviewCanvas | None" = None):
        self.total, self.done, self.callback, self.canvas = total, 0, callback, canvas

    def tick(self, x0: torch.Tensor, at: tuple[int, int] = (0, 0)) -> None:
        """``x0``: the estimate this call made (first image of the batch shown), at pixel offset ``at``."""
        self.done += 1
        if self.canvas is not None:
            self.canvas.land(x0, at)
        if self.callback is not None:
            self.callback(self.done, self.total)


# Long side of a preview in px: ComfyUI's default ``--preview-size`` (comfy/cli_args.py).
DEFAULT_PREVIEW_SIDE = 512
# Share of a decode's time previews may take (see PreviewCanvas): each preview is followed by a
# pause of 100x its own cost, so fast decodes show fewer previews and slow ones one per step/tile.
PREVIEW_BUDGET = 0.01


def preview_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(h, w)`` of the preview of an image of ``size``: aspect kept, long side <= ``max_side``."""
    h, w = int(size[0]), int(size[1])
    s = min(1.0, max(1, int(max_side)) / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


class PreviewCanvas:
    """The preview of one decode: ``[h, w, 3]`` uint8 (first image of the batch, the layout PIL
    and numpy take), black until estimates land; kept on the device of the estimates.

    ``sink(image)`` gets a CPU copy after every preview (for a CPU canvas the canvas itself, valid
    until the next call). ``budget``: previews take at most this share of the decode's time — a
    preview that cost ``c`` seconds is followed by none for ``c / budget`` seconds (estimates in
    between are skipped; a tiled canvas then keeps the previous step's picture there). None: a
    preview on every call.
    """

    def __init__(self, size: tuple[int, int], max_side: int, sink: Callable[[torch.Tensor], None],
                 budget: float | None = PREVIEW_BUDGET, clock: Callable[[], float] = time.perf_counter):
        self.full = (int(size[0]), int(size[1]))
        self.size = preview_size(self.full, max_side)
        self.image = None
        self.sink, self.budget, self.clock = sink, budget, clock
        self.shown = 0
        self._next = -math.inf

    def _span(self, start: int, length: int, axis: int) -> tuple[int, int]:
        full, small = self.full[axis], self.size[axis]
        a = min(small - 1, round(start * small / full))
        return a, max(a + 1, min(small, round((start + length) * small / full)))

    def land(self, x0: torch.Tensor, at: tuple[int, int] = (0, 0)) -> bool:
        """Paste the estimate ``x0`` ``[B, 3, h, w]`` (in [-1, 1]) of the region at pixel offset
        ``at = (row, col)`` and show the canvas; False when skipped to stay within the budget.

        The region is subsampled (a strided view) to about twice the preview scale, area-averaged
        to it and converted to uint8 where it was computed, so the work and the copy to the CPU
        are of preview size whatever the image size."""
        if self.budget is not None and self.clock() < self._next:
            return False
        if x0.device.type == "cuda":
            torch.cuda.synchronize(x0.device)   # time the preview, not the network's queued work
        start = self.clock()
        if self.image is None:
            self.image = torch.zeros(*self.size, 3, dtype=torch.uint8, device=x0.device)
        r0, r1 = self._span(at[0], x0.shape[-2], 0)
        c0, c1 = self._span(at[1], x0.shape[-1], 1)
        part, h, w = x0[0, :3], r1 - r0, c1 - c0
        if tuple(part.shape[-2:]) != (h, w):
            step = max(1, min(part.shape[-2] // h, part.shape[-1] // w) // 2)
            part = F.interpolate(part[None, :, ::step, ::step].float(), size=(h, w), mode="area")[0]
        # (x + 1) * 127.5, rounded: x * 127.5 + 128 truncated, within [0, 255]
        pixels = part.float().mul(127.5).add_(128.0).clamp_(0, 255).to(torch.uint8)
        self.image[r0:r1, c0:c1] = pixels.permute(1, 2, 0).to(self.image.device)
        self.sink(self.image.cpu())
        self.shown += 1
        end = self.clock()
        if self.budget:
            self._next = end + (end - start) / self.budget
        return True
