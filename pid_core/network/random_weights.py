"""Random-weight PiD networks with the real key names: for tests, benchmarks and demos.

``tiny_config`` gives a small net of any released family/version that ``detect`` recognises exactly
like the real file (same key set, same family-defining shapes); ``random_state_dict`` fills any
config with seeded random values (no download, no real weights).
"""

from __future__ import annotations

import torch

from .config import RELEASES_BY_NAME, PiDNetConfig
from .model import PiDNet

_TINY = dict(hidden_size=32, num_heads=2, patch_depth=4, pixel_dim=8, pixel_attn_dim=32, pixel_heads=2,
             pixel_depth=1, mlp_hidden=85, pixel_mlp_hidden=32, adapter_dim=16)


def tiny_config(release: str = "flux_v1.5", **overrides) -> PiDNetConfig:
    """A small config shaped like release ``release`` (see config.RELEASES); text dim stays 2304."""
    base = RELEASES_BY_NAME[release].config
    return base.replace(**{**_TINY, **overrides})


def random_state_dict(cfg: PiDNetConfig, seed: int = 0, dtype=torch.float32, prefix: str = "net.",
                      scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Seeded random weights under upstream key names (``prefix`` + key), like the fixtures' init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in PiDNet(cfg).state_dict().items()}
    out = {}
    for k, shape in shapes.items():
        x = torch.randn(shape, generator=gen)
        if k.endswith("log_alpha"):
            x = torch.log(torch.tensor(5.0)) + 0.3 * x
        elif len(shape) >= 2 and k != "y_pos_embedding":
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            x = x / fan_in ** 0.5 * (0.5 if "adaLN" in k else 1.0) * scale
        elif k.endswith("bias"):
            x = 0.1 * x
        elif len(shape) == 1:
            x = 1 + 0.1 * x
        else:
            x = 0.5 * x
        out[prefix + k] = x.to(dtype)
    return out
