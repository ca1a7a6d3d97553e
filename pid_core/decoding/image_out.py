"""The decode's last stage: PiD's x0 in [-1, 1] -> the image, checked and converted without
full-size temporaries (a 16384^2 fp32 image is 3 GiB; its boolean mask or a copy would be more).
"""

from __future__ import annotations

import torch

from .sampler import rows_of

OUT_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.uint8: "uint8"}


def count_non_finite(x: torch.Tensor) -> int:
    """Number of NaN/inf values, counted in row slices (no full-size boolean mask), read once."""
    count = torch.zeros((), dtype=torch.int64, device=x.device)
    for sl in rows_of(x):
        count += (~torch.isfinite(x[sl])).sum()
    return int(count)


def to_image(x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """x0 in [-1, 1] (fp32) -> image in [0, 1] (float32 in place, float16) or 0..255 (uint8).

    float32 reuses ``x``; the other dtypes are filled in row slices, so the peak is ``x`` plus
    the (smaller) result."""
    if dtype == torch.float32:
        return x.add_(1).div_(2)
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    for sl in rows_of(x):
        part = x[sl].add(1).div_(2)
        out[sl] = part.mul_(255).round_().clamp_(0, 255) if dtype == torch.uint8 else part
    return out
