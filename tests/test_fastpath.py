"""The fast path: memory-bounded chunking and slicing change no result beyond fp32
rounding, bf16 stays within a stated tolerance of fp32, weights are stored once, compile is opt-in."""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import assert_fp_close
from torch import nn

from pid_core.decoding import noise, sampler
from pid_core.decoding.decoder import load_decoder
from pid_core.network import blocks, rope
from pid_core.network.adapter import tokens_of
from pid_core.network.model import PiDNet, add_pixel_positions_, pixel_position_table
from pid_core.network.random_weights import random_state_dict, tiny_config

GEN = torch.Generator().manual_seed(0)
# bf16 vs fp32 (tiny random nets, same seed): mean |difference| of the [0, 1] image, its 99th
# percentile, and the relative L2 error of one network call's velocity.
BF16_IMAGE_MEAN, BF16_IMAGE_P99, BF16_VELOCITY_REL = 0.005, 0.03, 0.02


def randn(*shape):
    return torch.randn(*shape, generator=GEN)


@pytest.fixture(scope="module")
def net():
    cfg = tiny_config("flux_v1.5")
    n = PiDNet(cfg).eval().requires_grad_(False)
    n.load_state_dict({k[4:]: v for k, v in random_state_dict(cfg, seed=5).items()})
    return n


def _inputs(net, b=2, hw=(64, 96)):
    cfg = net.cfg
    z = randn(b, cfg.latent_channels, hw[0] // cfg.output_factor, hw[1] // cfg.output_factor)
    t, s = torch.tensor([999.0, 634.0][:b]), torch.tensor([0.0, 0.3][:b])
    return randn(b, 3, *hw), t, randn(b, 300, 2304), z, s


@torch.no_grad()
def test_chunked_pixel_block_equals_unchunked(net):
    block = net.pixel_blocks[0]
    b, gh, gw = 2, 4, 6
    p, s = randn(b * gh * gw, 256, net.cfg.pixel_dim), randn(b * gh * gw, net.cfg.hidden_size)
    ropes = rope.rope_2d(gh, gw, net.cfg.pixel_head_dim, net.cfg.rope_ref_grid, "cpu")
    whole = block(p, s, b, ropes)
    for chunk in (1, 5, 16, 47):
        assert_fp_close(block(p, s, b, ropes, chunk=chunk), whole)
    p2 = p.clone()
    out = block(p2, s, b, ropes, chunk=7, inplace=True)
    assert out.data_ptr() == p2.data_ptr()                      # the stream was reused
    assert_fp_close(out, whole)


class CastingLinear(nn.Linear):
    """Stands in for a host layer (comfy.ops): its own forward, weights not to be sliced."""

    def forward(self, x):
        return super().forward(x)


@torch.no_grad()
def test_host_layers_take_the_fused_path(net):
    """A Linear subclass with its own forward is never sliced; results agree with the slices."""
    block = net.pixel_blocks[0]
    b, gh, gw = 1, 4, 4
    p, s = randn(gh * gw, 256, net.cfg.pixel_dim), randn(gh * gw, net.cfg.hidden_size)
    ropes = rope.rope_2d(gh, gw, net.cfg.pixel_head_dim, net.cfg.rope_ref_grid, "cpu")
    sliced = block(p, s, b, ropes, chunk=5)
    lin = block.adaLN_modulation[0]
    host = CastingLinear(lin.in_features, lin.out_features)
    host.load_state_dict(lin.state_dict())
    block.adaLN_modulation[0] = host
    try:
        assert block._split_modulation(s) is None
        assert_fp_close(block(p, s, b, ropes, chunk=5), sliced)
    finally:
        block.adaLN_modulation[0] = lin


@torch.no_grad()
def test_chunked_forward_equals_unchunked(net, monkeypatch):
    """Chunked pixel blocks, final layer and patch MLPs, and split qkv GEMMs, through a call."""
    x, t, y, z, s = _inputs(net)
    tokens = net.lq_proj.encode(z, net.grid_for(x))           # heads on demand
    whole = net.velocity(x, t, y, tokens, s)
    monkeypatch.setattr(blocks, "QKV_SPLIT_BYTES", 0)          # split q/k/v at any size
    assert_fp_close(net.velocity(x, t, y, tokens, s, chunk=5), whole)
    assert_fp_close(net.velocity(x, t, y, tokens, s, chunk=3), whole)
    assert "chunk" in inspect.signature(net.velocity).parameters   # an argument, not net state


@torch.no_grad()
def test_adapter_split_equals_adapter_call(net):
    x, _, _, z, _ = _inputs(net)
    grid = net.grid_for(x)
    ad = net.lq_proj
    split = [ad.head(tokens_of(ad.latent_proj(ad.align(z, grid))), k) for k in range(ad.n_heads)]
    for a, b in zip(ad(z, grid), split, strict=True):
        assert torch.equal(a, b)


def test_rms_norm_matches_the_spelled_out_formula():
    norm = blocks.RMSNorm(64)
    norm.weight.data = 1 + 0.1 * randn(64)
    for dtype in (torch.float32, torch.bfloat16):
        x = randn(3, 17, 64).to(dtype)
        xf = x.float()
        want = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype) * norm.weight.to(dtype)
        assert torch.equal(norm.to(dtype)(x), want)
        norm.float()


def test_rope_slices_and_pairs_match_the_reference_formula(monkeypatch):
    cos, sin = rope.rope_2d(5, 7, 64, 8, "cpu")
    for dtype in (torch.float32, torch.bfloat16):
        x = randn(2, 3, 35, 64).to(dtype)
        xf = x.float().unflatten(-1, (-1, 2))
        a, b = xf[..., 0], xf[..., 1]
        want = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(dtype)
        assert torch.equal(rope.apply_rope(x, cos, sin), want)
        monkeypatch.setattr(rope, "ROPE_SLICE_ELEMENTS", 100)   # many token slices
        assert torch.equal(rope.apply_rope(x, cos, sin), want)
        monkeypatch.undo()


def test_rope_tables_are_made_on_the_tokens_device():
    cos, sin = rope.rope_2d(6, 4, 72, 64, "meta")
    assert cos.device.type == "meta" and cos.dtype == torch.float32 and cos.shape == sin.shape == (24, 36)
    cos, sin = rope.rope_1d(10, 64, 1e4, "meta")
    assert cos.device.type == "meta" and cos.shape == (10, 32)


def test_pixel_positions_added_in_place_equal_the_table():
    for dtype in (torch.float32, torch.bfloat16):
        tok = randn(2, 32, 48, 16).to(dtype)
        want = tok + pixel_position_table(32, 48, 16, "cpu", dtype)
        assert torch.equal(add_pixel_positions_(tok.clone()), want)


def test_x0_in_row_slices_equals_one_pass(monkeypatch):
    x, v = randn(2, 3, 40, 24), randn(2, 3, 40, 24).bfloat16()
    whole = sampler.velocity_to_x0(x, 0.634, v)
    monkeypatch.setattr(sampler, "X0_SLICE_ELEMENTS", 300)
    assert torch.equal(sampler.velocity_to_x0(x, 0.634, v), whole)


def test_noise_prefetch_thread_keeps_the_draw_order():
    with noise.Noise(9, (1, 3, 8, 8), "cpu") as plain:
        want = [plain.next() for _ in range(4)]
    gen = noise.make_generator(9)
    assert torch.equal(want[0], torch.randn(1, 3, 8, 8, generator=gen))
    assert torch.equal(want[1], torch.randn(1, 3, 8, 8, generator=gen))
    src = noise.Noise(9, (1, 3, 8, 8), "cpu")
    src._pool = noise.ThreadPoolExecutor(max_workers=1)   # the accelerator path: draws made ahead
    src._ahead = src._pool.submit(src._draw)
    try:
        got = [src.next(), src.next(into=torch.empty(1, 3, 8, 8)), src.next(), src.next()]
    finally:
        src.close()
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_each_item_has_its_own_stream_seeded_seed_plus_its_index():
    with noise.Noise(7, (3, 3, 8, 8), "cpu") as batch:
        draws = [batch.next(), batch.next()]
    for i in range(3):
        with noise.Noise(7 + i, (1, 3, 8, 8), "cpu") as alone:
            assert all(torch.equal(d[i:i + 1], alone.next()) for d in draws)
    with noise.Noise(noise.MAX_SEED, (2, 3, 8, 8), "cpu") as wrap:      # seed + i wraps at 2^64
        assert torch.equal(wrap.next()[1], torch.randn(3, 8, 8, generator=noise.make_generator(0)))


def test_shared_noise_gives_every_item_the_same_draws():
    gen = noise.make_generator(4)
    first = torch.randn(1, 3, 8, 8, generator=gen)
    with noise.Noise(4, (3, 3, 8, 8), "cpu", shared=True) as src:
        a, b = src.next(), src.next(into=torch.empty(3, 3, 8, 8))
    assert torch.equal(a, first.expand(3, -1, -1, -1))
    assert torch.equal(b, torch.randn(1, 3, 8, 8, generator=gen).expand(3, -1, -1, -1))


def test_bf16_decoder_holds_only_bf16_weights(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5"), dtype="bf16")
    assert {p.dtype for p in dec.net.parameters()} == {torch.bfloat16}
    assert not list(dec.net.buffers())


def test_bf16_within_stated_tolerance_of_fp32(tiny_sd_factory, text_features):
    sd = tiny_sd_factory("flux_v1.5", seed=1)
    d32, d16 = load_decoder(sd, dtype="fp32"), load_decoder(sd, dtype="bf16")
    z = randn(1, 16, 4, 4)
    o32 = d32.decode(z, 0.0, text_features, latent_format="flux", seed=3)
    o16 = d16.decode(z, 0.0, text_features, latent_format="flux", seed=3)
    diff = (o32 - o16.float()).abs()
    assert diff.mean() < BF16_IMAGE_MEAN and diff.flatten().quantile(0.99) < BF16_IMAGE_P99
    x, t, _, _, s = _inputs(d32.net, b=1, hw=(128, 128))
    with torch.no_grad():
        v32 = d32.net(x, t, text_features, z, s)
        v16 = d16.net(x, t, text_features, z, s).float()
    assert (v32 - v16).norm() / v32.norm() < BF16_VELOCITY_REL
