"""Bounded host memory for large tiled decodes: two fp32 full-size buffers, separable blend
weights, noise drawn into the dead state, the image made in place (or streamed to uint8/fp16),
and a clear refusal when the canvas cannot fit in system RAM."""

from __future__ import annotations

import pytest
import torch

from bench.memtrace import trace_peak
from pid_core.decoding import memory, sampler
from pid_core.decoding.decoder import DecodeOptions, load_decoder
from pid_core.decoding.image_out import to_image
from pid_core.decoding.noise import Noise
from pid_core.decoding.tiling import Tile, TiledDenoiser, blend_profiles, feather, tile_grid
from pid_core.errors import PiDInputError, PiDOutOfMemoryError

pytestmark = pytest.mark.usefixtures("one_thread")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_normalised_profiles_sum_to_one_and_match_the_feathers():
    h, w, ov = 400, 656, 48
    tiles = tile_grid(h, w, 160, 192, ov)
    rows, cols = blend_profiles(tiles, h, ov, 0), blend_profiles(tiles, w, ov, 1)
    total, wsum = torch.zeros(h, w), torch.zeros(h, w)
    for t in tiles:
        t.crop(total).add_(rows[t.y0][:, None] * cols[t.x0][None, :])
        t.crop(wsum).add_(feather(t, h, w, ov))
    assert (total - 1).abs().max() < 1e-6
    for t in tiles:                         # the same weights as feather / sum of feathers
        want = feather(t, h, w, ov) / t.crop(wsum)
        assert torch.allclose(rows[t.y0][:, None] * cols[t.x0][None, :], want, atol=1e-6)


def test_tiles_off_a_grid_are_refused(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    aligned = dec.net.lq_proj.align(randn(1, 16, 4, 4), (8, 8))
    odd = [Tile(0, 0, 64, 64), Tile(64, 64, 64, 64)]            # a diagonal, not a grid
    with pytest.raises(PiDInputError, match="tiles must form a grid of equal tiles"):
        TiledDenoiser(None, dec.net.lq_proj, aligned, odd, (128, 128), 16, "cpu", "cpu")


def test_renoise_in_place_gives_upstreams_values():
    x0, eps = randn(1, 3, 64, 48), randn(1, 3, 64, 48, seed=1)
    t = torch.tensor(0.634, dtype=torch.float32)
    want = (1 - t) * x0 + t * eps                                 # upstream: an fp32 tensor time
    got = sampler.renoise(x0.clone(), eps.clone(), 0.634)
    assert torch.equal(got, want)


def test_draws_into_a_dead_buffer_match_fresh_draws():
    with Noise(5, (1, 3, 16, 16), "cpu") as a, Noise(5, (1, 3, 16, 16), "cpu") as b:
        buf = torch.empty(1, 3, 16, 16)
        for _ in range(3):
            got = b.next(into=buf)
            assert got is buf and torch.equal(a.next(), got)


def test_image_conversion_in_place_and_streamed(monkeypatch):
    x = randn(2, 3, 40, 24).clamp(-1, 1)
    want = (x + 1) / 2
    monkeypatch.setattr(sampler, "X0_SLICE_ELEMENTS", 300)
    u8 = to_image(x.clone(), torch.uint8)
    assert u8.dtype == torch.uint8 and torch.equal(u8, (want * 255).round().to(torch.uint8))
    assert torch.equal(to_image(x.clone(), torch.float16), want.half())
    buf = x.clone()
    out = to_image(buf)
    assert out is buf and torch.equal(out, want)                # float32: in place, bit-identical


def test_decode_out_dtype(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    z, y = randn(1, 16, 2, 3), randn(1, 300, 2304)
    ref = dec.decode(z, 0.0, y, latent_format="flux", steps=2)
    u8 = dec.decode(z, 0.0, y, latent_format="flux", steps=2, options=DecodeOptions(out_dtype=torch.uint8))
    assert torch.equal(u8, (ref * 255).round().to(torch.uint8))
    with pytest.raises(PiDInputError, match="out_dtype=torch.int32 is not supported"):
        dec.decode(z, 0.0, y, latent_format="flux", steps=1, options=DecodeOptions(out_dtype=torch.int32))


def test_tiled_canvas_holds_two_fp32_buffers(tiny_sd_factory, monkeypatch):
    """Traced on the CPU with a stand-in velocity: the full-size bytes alive at once are the
    state and the canvas (24 B/px) plus tile-sized work and one row slice; no weight maps, no
    weight sum, no extra noise buffer or output copy."""
    monkeypatch.setattr(sampler, "X0_SLICE_ELEMENTS", 1 << 16)   # slices small next to the canvas
    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    h, w, tile = 1024, 768, 128
    tiles = tile_grid(h, w, tile, tile, 32)
    aligned = dec.net.lq_proj.align(randn(1, 16, h // 32, w // 32), (h // 16, w // 16))
    with torch.inference_mode(), trace_peak("cpu", fake_sdpa=False) as tr:
        den = TiledDenoiser(lambda x, t, tok, at: x * 0.5, dec.net.lq_proj, aligned, tiles, (h, w), 32,
                            "cpu", "cpu")
        with Noise(0, (1, 3, h, w), "cpu") as noise:
            out = to_image(sampler.sample(den, noise, sampler.t_schedule(4)))
    assert out.shape == (1, 3, h, w)
    full = memory.canvas_bytes(h, w)
    assert full == 24 * h * w
    tile_work = 8 * tile * tile * 3 * 8 + 8 * (1 << 16)          # tile-sized float64 work, one slice
    features = sum(t.numel() * t.element_size() for t in den.tokens)
    assert tr.peak <= full + features + tile_work, (tr.peak, full)


def test_a_canvas_that_does_not_fit_in_ram_is_refused_early(tiny_sd_factory, monkeypatch):
    dec = load_decoder(tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1), dtype="fp32")
    z, y = randn(1, 16, 8, 8), randn(1, 300, 2304)
    plan = dec.plan(z.shape, tile=128)
    need = memory.host_bytes(dec.net.cfg, plan, dec.dtype)
    assert need >= memory.canvas_bytes(256, 256)
    monkeypatch.setattr(memory, "available_bytes", lambda device: need // 2)
    calls = []
    with pytest.raises(PiDOutOfMemoryError, match=r"a 256x256 tiled decode \(batch 1\) keeps its full-size "
                                                  r"canvas in system RAM"):
        dec.decode(z, 0.0, y, latent_format="flux", plan=plan,
                   options=DecodeOptions(callback=lambda i, n: calls.append(i)))
    assert calls == []                                          # refused before any work
    monkeypatch.setattr(memory, "available_bytes", lambda device: need)
    assert dec.decode(z, 0.0, y, latent_format="flux", steps=1, plan=plan).shape == (1, 3, 256, 256)
