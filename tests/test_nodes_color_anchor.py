"""Colour anchoring and sizing helpers used by the 2K->4K upscaler (pid_core.decoding.color_anchor/sizing)."""

from __future__ import annotations

import pytest
import torch
from node_helpers import pack_module

anchor = pack_module("pid_core.decoding.color_anchor")
sizing = pack_module("pid_core.decoding.sizing")
errors = pack_module("pid_core.errors")


def _smooth(b, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, 4, 4, generator=g) * 0.6 + 0.2
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def test_anchor_restores_low_frequencies_and_keeps_detail():
    source = _smooth(1, 64, 64, 0).clamp(0, 1)
    up = sizing.resize_bchw(source, (256, 256))
    detail = 0.05 * torch.sign(torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(1)))
    drifted = (up + torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1) + detail).clamp(0, 1)
    fixed = anchor.anchor_colors(drifted, source, cutoff=32)
    assert (fixed.mean(dim=(2, 3)) - up.mean(dim=(2, 3))).abs().max() < 0.01
    hp = lambda x: x - anchor.low_pass(x, 32)  # noqa: E731
    assert torch.allclose(hp(fixed), hp(drifted), atol=0.02)  # PiD's detail survives
    half = anchor.anchor_colors(drifted, source, strength=0.5)
    assert (half - drifted).abs().mean() < (fixed - drifted).abs().mean()


def test_anchor_validates_inputs():
    img = torch.rand(1, 3, 32, 32)
    with pytest.raises(errors.PiDInputError, match="same batch"):
        anchor.anchor_colors(img, torch.rand(2, 3, 8, 8))
    with pytest.raises(errors.PiDInputError, match="strength"):
        anchor.anchor_colors(img, img, strength=2.0)


@pytest.mark.parametrize("hw, long_side, multiple, expected", [
    ((2048, 1536), 4096, 64, (4096, 3072)),
    ((1080, 1920), 4096, 64, (2304, 4096)),
    ((100, 150), 256, 64, (192, 256)),
    ((128, 192), 160, 16, (112, 160)),
])
def test_fit_long_side(hw, long_side, multiple, expected):
    assert sizing.fit_long_side(hw, long_side, multiple) == expected


def test_fit_long_side_rejects_nonsense():
    with pytest.raises(errors.PiDInputError, match="empty side"):
        sizing.fit_long_side((0, 10), 256)
    with pytest.raises(errors.PiDInputError, match="smaller than"):
        sizing.fit_long_side((10, 10), 8, 16)


def test_upscale_sizes_keep_vae_input_whole():
    assert sizing.upscale_sizes((1536, 2048), 4096, 4) == ((3072, 4096), (768, 1024))
    assert sizing.upscale_sizes((1080, 1920), 4096, 4) == ((2304, 4096), (576, 1024))
    with pytest.raises(errors.PiDInputError, match="not divisible"):
        sizing.upscale_sizes((100, 100), 1024, 3, 64)
