"""The colour-drift metric (pid_core.decoding.color_check): known shifts injected in CIELAB are recovered
within 5 %, detail does not count, bands and verdicts say where the drift is."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pid_core.decoding import color_check as cc
from pid_core.decoding.color_anchor import add_upsampled_, anchor_colors
from pid_core.errors import PiDInputError


def smooth(h=256, w=256, seed=0, lo=0.25, hi=0.75):
    """A smooth sRGB picture with colours well inside the gamut."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 3, 3, generator=g) * (hi - lo) + lo
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def shifted(img, dl=0.0, da=0.0, db=0.0, chroma=1.0, mask=None):
    lab = cc.rgb_to_lab(img)
    new = lab.clone()
    new[:, 1:] *= chroma
    new += torch.tensor([dl, da, db], dtype=lab.dtype).view(1, 3, 1, 1)
    if mask is not None:
        new = torch.where(mask, new, lab)
    return cc.lab_to_rgb(new).float()


def test_lab_round_trip_and_known_values():
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert (cc.lab_to_rgb(cc.rgb_to_lab(img)) - img).abs().max() < 1e-6
    white = cc.rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    assert abs(white[0] - 100) < 1e-3 and white[1:].abs().max() < 1e-3
    red = cc.rgb_to_lab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20], dtype=red.dtype), atol=0.05)


@pytest.mark.parametrize("dl,da,db", [(0, 4, -2), (3, 0, 0), (-2, -3, 5), (0, 1.0, 0.5)])
def test_injected_lab_shift_is_recovered_within_5_percent(dl, da, db):
    ref = smooth()
    img = shifted(ref, dl, da, db)
    want = (dl ** 2 + da ** 2 + db ** 2) ** 0.5
    rep = cc.compare(img, ref)
    assert abs(rep.overall.delta_e - want) <= 0.05 * want, (rep.overall.delta_e, want)
    if da:
        assert abs(rep.overall.da - da) <= 0.05 * abs(da)
    if db:
        assert abs(rep.overall.db - db) <= 0.05 * abs(db)


def test_chroma_shift_is_recovered_and_detail_does_not_count():
    ref = smooth(seed=3)
    img = shifted(ref, chroma=1.2)
    want = 0.2 * float(cc.rgb_to_lab(ref)[:, 1:].norm(dim=1).mean())
    # PiD-like detail: a +-0.04 checkerboard, which the low-pass removes
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    detail = 0.04 * (((yy // 2 + xx // 2) % 2) * 2 - 1).float()
    rep = cc.compare((img + detail).clamp(0, 1), ref)
    assert abs(rep.overall.chroma - want) <= 0.05 * want, (rep.overall.chroma, want)
    assert cc.compare((ref + detail).clamp(0, 1), ref).overall.delta_e < 0.5


def test_reduced_size_reference_gives_the_same_figures():
    """The node compares at the VAE's size (1/4 of PiD's output): the same drift is read."""
    ref = smooth(512, 512, seed=5)
    img = shifted(ref, 0, -4, 3)
    full = cc.compare(img, ref, cutoff=32)
    quarter = cc.compare(img, F.interpolate(ref, size=(128, 128), mode="area"))
    assert quarter.size == (128, 128)
    assert abs(quarter.overall.delta_e - full.overall.delta_e) <= 0.05 * full.overall.delta_e


def test_a_shadow_only_shift_shows_in_the_shadow_band():
    ref = torch.cat([torch.full((1, 3, 128, 128), 0.12), torch.full((1, 3, 128, 128), 0.8)], dim=-1)
    ref = ref * torch.tensor([1.0, 0.9, 1.1]).view(1, 3, 1, 1)
    mask = cc.rgb_to_lab(ref)[:, :1] < 35
    img = shifted(ref, da=-6, mask=mask)                      # shadows turn green
    rep = cc.compare(img, ref, cutoff=4)
    shadows, highlights = rep.bands["shadows"], rep.bands["highlights"]
    assert abs(shadows.da + 6) <= 0.3 and highlights.delta_e < 0.3
    assert abs(shadows.share - 0.5) < 0.01 and rep.bands["midtones"].share < 0.02   # the blurred edge
    text = cc.describe(rep)
    assert "shadows (50% of pixels)" in text and "midtones (1% of pixels)" in text and "leans green (Δa* -" in text
    assert "verdict: colour drift:" in text and "try anchor_colors or the v1.5 checkpoint" in text
    on_v15 = cc.describe(rep, newer_checkpoint=False)
    assert on_v15.splitlines()[-1].endswith("; try anchor_colors") and "v1.5" not in on_v15


def test_a_band_of_a_few_pixels_is_shown_as_under_one_percent():
    ref = torch.full((1, 3, 64, 64), 0.8)
    ref[..., :1, :1] = 0.05                                   # one dark pixel in 4096
    rep = cc.compare(ref.clone(), ref, cutoff=1)
    assert 0 < rep.bands["shadows"].share < 0.005
    assert "shadows (<1% of pixels)" in cc.describe(rep)


def test_verdict_lines():
    ref = smooth(seed=7)
    same = cc.describe(cc.compare(shifted(ref, da=0.5), ref))
    assert same.splitlines()[-1] == "verdict: colours match the VAE decode"
    drift = cc.compare(shifted(ref, dl=-5, db=6), ref)
    assert not drift.matches
    text = cc.describe(drift, sigma=0.3, anchored=cc.compare(ref, ref))
    assert "verdict: colour drift: mean ΔE 7." in text
    assert "after anchor_colors: mean ΔE 0.0" in text
    assert "sigma 0.3 > 0, so the VAE decoded the noisy latent" in text
    assert cc.NO_CHECK.startswith("no colour check: connect the LDM's VAE")
    with pytest.raises(PiDInputError, match="the colour check needs image and reference as"):
        cc.compare(torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8))


def test_anchoring_removes_the_drift_the_check_reports():
    ref = smooth(128, 128, seed=9)
    img = F.interpolate(shifted(ref, dl=4, da=-5), size=(512, 512), mode="bicubic", align_corners=False)
    before = cc.compare(img, ref).overall.delta_e
    after = cc.compare(anchor_colors(img.clamp(0, 1), ref), ref).overall.delta_e
    assert before > 5 and after < 0.5


def test_strip_upsampling_equals_one_interpolate():
    coarse = torch.randn(2, 3, 9, 13, generator=torch.Generator().manual_seed(2))
    want = F.interpolate(coarse, size=(290, 411), mode="bicubic", align_corners=False)
    got = add_upsampled_(torch.zeros(2, 3, 290, 411), coarse, rows=37)
    assert (got - want).abs().max() < 1e-5
    img = torch.rand(1, 3, 64, 64)
    same = anchor_colors(img, img.clone(), inplace=True)
    assert same.data_ptr() == img.data_ptr()
