"""Tiled decoding: one tile == whole decode exactly, seam-free blending, geometry,
progress over tiles x steps, the envelope rules for tiled sizes."""

from __future__ import annotations

import pytest
import torch
from conftest import with_envelope

from pid_core.decoding import memory
from pid_core.decoding.decoder import DecodeOptions, load_decoder
from pid_core.decoding.sampler import sample, t_schedule, velocity_to_x0
from pid_core.decoding.tiling import Tile, TiledDenoiser, feather, tile_grid
from pid_core.errors import PiDInputError

GEN = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=GEN)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("release,fmt,latent", [
    ("flux_v1.5", "flux", (2, 16, 3, 2)),       # replicate padding, per-token gates, PiT gate, batch 2
    ("flux_2k", "flux", (1, 16, 2, 3)),         # zeros padding, per-dim gates
    ("flux2_v1.5", "flux2", (1, 128, 2, 2)),    # unpatchified 128-ch latent
])
def test_single_tile_equals_whole_decode_exactly(tiny_sd_factory, release, fmt, latent):
    dec = load_decoder(tiny_sd_factory(release, patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    z, y = randn(*latent), randn(1, 300, 2304)
    h, w = latent[-2] * dec.info.output_factor, latent[-1] * dec.info.output_factor
    args = dict(latent_format=fmt, seed=4, steps=3)
    whole = dec.decode(z, 0.3, y, **args)
    calls = []
    plan = dec.plan(z.shape, tile=(h, w))
    tiled = dec.decode(z, 0.3, y, plan=plan, options=DecodeOptions(callback=lambda i, n: calls.append((i, n))),
                       **args)
    assert plan.tiled and plan.n_tiles == 1
    assert torch.equal(tiled, whole)
    assert torch.equal(dec.decode(z, 0.3, y, plan=dec.plan(z.shape, tile=4096), **args), whole)  # > the image
    assert calls == [(1, 3), (2, 3), (3, 3)]


def _constant_velocity_net(dec, colour):
    """Zero every weight except the final layer's bias: the net outputs ``colour`` everywhere."""
    sd = dec.net.state_dict()
    for k, v in sd.items():
        v.zero_()
    sd["final_layer.linear.bias"].copy_(torch.tensor(colour))
    dec.net.load_state_dict(sd)
    return dec


class ZeroNoise:
    def __init__(self, shape):
        self.shape = shape

    def next(self, into=None):
        return torch.zeros(self.shape) if into is None else into.zero_()


def test_blending_is_seam_free_on_a_constant_model(tiny_sd_factory):
    dec = _constant_velocity_net(load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2,
                                                              adapter_res_blocks=1), dtype="fp32"),
                                 [0.25, -0.5, 0.75])
    net = dec.net
    h, w = 160, 224
    plan = memory.tiled_plan(net.cfg, h, w, (64, 96), overlap=32)
    assert plan.n_tiles >= 6
    z, y, sig = randn(1, 16, 5, 7), randn(1, 300, 2304), torch.zeros(1)
    aligned = net.lq_proj.align(z, (h // 16, w // 16))

    def x0_of(x, t, tokens, at):
        return velocity_to_x0(x, t, net.velocity(x, torch.full((x.shape[0],), t) * 1000, y, tokens, sig))

    # zero noise: x0 = -t * colour is the same constant in every tile, so the blended canvas
    # must be constant to rounding, across every seam
    den = TiledDenoiser(x0_of, net.lq_proj, aligned, plan.tiles, (h, w), plan.overlap, "cpu", "cpu")
    out = sample(den, ZeroNoise((1, 3, h, w)), t_schedule(4))
    for c in range(3):
        assert float(out[0, c].max() - out[0, c].min()) < 1e-6
    # with real noise, tiled equals the whole-image decode to rounding everywhere
    z = randn(1, 16, 5, 7)
    whole = dec.decode(z, 0.0, y, latent_format="flux", seed=2)
    tiled = dec.decode(z, 0.0, y, latent_format="flux", seed=2, plan=dec.plan(z.shape, tile=(64, 96), tile_overlap=32))
    assert (tiled - whole).abs().max() < 1e-6


def test_tile_grid_covers_with_the_requested_overlap():
    for (h, w, th, tw, ov) in [(160, 224, 64, 96, 32), (2048, 4096, 1024, 1024, 128), (48, 32, 64, 64, 16)]:
        tiles = tile_grid(h, w, th, tw, ov)
        cover = torch.zeros(h, w)
        for t in tiles:
            assert (t.h, t.w) == (min(th, h), min(tw, w)) and t.y0 % 16 == 0 and t.x0 % 16 == 0
            assert t.y0 + t.h <= h and t.x0 + t.w <= w
            t.crop(cover).add_(1)
        assert cover.min() >= 1
        ys = sorted({t.y0 for t in tiles})
        assert all(b - a <= min(th, h) - ov for a, b in zip(ys, ys[1:]))   # neighbours share >= ov
    assert tile_grid(64, 64, 64, 64, 32) == [Tile(0, 0, 64, 64)]


def test_feather_weights_are_positive_and_one_for_a_whole_tile():
    assert torch.equal(feather(Tile(0, 0, 64, 96), 64, 96, 32), torch.ones(64, 96))
    wgt = feather(Tile(96, 0, 64, 96), 160, 96, 32)         # inner edge on top only
    assert wgt.min() > 0 and wgt.max() == 1
    assert wgt[0, 0] < wgt[31, 0] < wgt[32, 0] == wgt[63, 0] == 1            # ramp on the inner edge
    assert torch.equal(wgt[:, 0], wgt[:, 95])                                 # none on the borders
    both = feather(Tile(48, 32, 64, 64), 160, 128, 16)                        # inner edges all round
    assert both[0, 32] < 1 and both[63, 32] < 1 and both[32, 0] < 1 and both[32, 63] < 1
    assert both[16:48, 16:48].eq(1).all()


def test_progress_counts_tiles_times_steps_and_interrupts_between_tiles(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    z, y = randn(1, 16, 4, 4), randn(1, 300, 2304)
    plan = dec.plan(z.shape, tile=64)
    calls = []
    dec.decode(z, 0.0, y, latent_format="flux", steps=2, plan=plan,
               options=DecodeOptions(callback=lambda i, n: calls.append((i, n))))
    total = plan.progress_total(2)
    assert plan.n_tiles == 9 and calls == [(i, total) for i in range(1, total + 1)]

    class Stop(Exception):
        pass

    def stop(i, n):
        if i == 5:
            raise Stop

    with pytest.raises(Stop):
        dec.decode(z, 0.0, y, latent_format="flux", steps=2, plan=plan, options=DecodeOptions(callback=stop))


def test_tiled_envelope_rules(tiny_sd_factory):
    dec = with_envelope(load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1),
                                     dtype="fp32"), (64, 128))
    z, y = randn(1, 16, 8, 6), randn(1, 300, 2304)          # 256 x 192 px: beyond the envelope
    with pytest.raises(PiDInputError, match="outside what this checkpoint was trained for"):
        dec.decode(z, 0.0, y, latent_format="flux", steps=1)              # whole image: refused
    plan = dec.plan(z.shape)                                               # "auto": tiles inside
    assert plan.tiled and max(plan.tile_size) <= 128
    img = dec.decode(z, 0.0, y, latent_format="flux", steps=1, plan=plan)
    assert img.shape == (1, 3, 256, 192) and torch.isfinite(img).all()
    with pytest.raises(PiDInputError, match="tile 192x192 is outside what this checkpoint"):
        dec.plan(z.shape, tile=192)
    with pytest.raises(PiDInputError, match="tile 100x100 is invalid: both sides must be positive "
                                            "multiples of 16"):
        dec.plan(z.shape, tile=100)
    with pytest.raises(PiDInputError, match="tile settings are invalid"):
        dec.plan(z.shape, tile="big")
    with pytest.raises(PiDInputError, match="tile settings are invalid"):
        dec.plan(z.shape, tile=64, tile_overlap=-16)
    with pytest.raises(PiDInputError, match="short side is below 64 px"):
        dec.plan((1, 16, 1, 8), tile="auto")


def test_plan_follows_the_budget(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32")
    shape = (1, 16, 16, 16)                                  # 512 x 512 px
    roomy = dec.plan(shape, memory_budget_bytes=1 << 40)
    assert not roomy.tiled and roomy.n_tiles == 1 and roomy.progress_total(4) == 4
    need = roomy.estimate.total
    tight = dec.plan(shape, memory_budget_bytes=int(need * 0.8))
    assert tight.tiled and tight.estimate.total <= need * 0.8
    assert not dec.plan(shape, tile=None, memory_budget_bytes=1).tiled       # None: whole, always


def test_whole_and_tiled_decodes_run_the_same_loop(tiny_sd_factory, monkeypatch):
    """Both paths go through sampler.sample: same times, same draws, one x0 call per step;
    the progress hook ticks once per network call (once per tile)."""
    from pid_core.decoding import decoder as decoder_mod
    from pid_core.decoding import sampler as sampler_mod

    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    z, y = randn(1, 16, 4, 4), randn(1, 300, 2304)
    seen = []

    def counting_sample(x0_of, noise, times):
        record = {"kind": type(x0_of).__name__, "times": [], "draws": 0}
        seen.append(record)

        class CountingNoise:
            def next(self, into=None):
                record["draws"] += 1
                return noise.next(into)

        def counting_x0(x, t):
            record["times"].append(t)
            return x0_of(x, t)

        return sampler_mod.sample(counting_x0, CountingNoise(), times)

    monkeypatch.setattr(decoder_mod, "sample", counting_sample)
    ticks = {"whole": [], "tiled": []}
    dec.decode(z, 0.2, y, latent_format="flux", steps=3,
               options=DecodeOptions(callback=lambda i, n: ticks["whole"].append(n)))
    dec.decode(z, 0.2, y, latent_format="flux", steps=3, plan=dec.plan(z.shape, tile=64),
               options=DecodeOptions(callback=lambda i, n: ticks["tiled"].append(n)))
    whole, tiled = seen
    assert whole["kind"] == "partial" and tiled["kind"] == "TiledDenoiser"
    assert whole["times"] == tiled["times"] == list(t_schedule(3)[:-1])
    assert whole["draws"] == tiled["draws"] == 3                  # start noise + 2 re-noise draws
    assert ticks["whole"] == [3] * 3 and ticks["tiled"] == [27] * 27
