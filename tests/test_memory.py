"""The analytic cost model: FLOP counts, the memory estimator (monotone, and checked
against an exact trace of the real code on the meta device), the tile planner."""

from __future__ import annotations

import pytest
import torch

from bench.memtrace import meta_decoder, traced_peak
from pid_core.decoding import memory as M
from pid_core.network import flops as F
from pid_core.network.config import ENVELOPE_2K, RELEASES_BY_NAME
from pid_core.network.model import PiDNet
from pid_core.network.random_weights import tiny_config

V1 = RELEASES_BY_NAME["flux_2k"].config
V15 = RELEASES_BY_NAME["flux_v1.5"].config


def test_flops_match_the_issue_count():
    """~45 TFLOP per forward at 2048^2: patch blocks ~37 (attention ~24), pixel blocks ~6,
    latent branch and gates ~2; ~180 TFLOP per 4-step decode; ~1.9 PFLOP at 4096^2."""
    f = F.forward_flops(V1, 2048, 2048)
    tera = {k: v / 1e12 for k, v in f.items()}
    patch = sum(v for k, v in tera.items() if k.startswith("patch."))
    pixel = sum(v for k, v in tera.items() if k.startswith("pixel."))
    assert 44 < sum(tera.values()) < 46.5
    assert 36 < patch < 38.5 and 23 < tera["patch.attention"] < 25 and 5.5 < pixel < 6.5
    assert 1.5 < tera["gates"] + tera["adapter.trunk"] + tera["adapter.heads"] + tera["embed"] < 2.5
    assert 170 < F.decode_flops(V1, 2048, 2048) / 1e12 < 185
    assert 1850 < F.decode_flops(V1, 4096, 4096) / 1e12 < 1980
    assert F.decode_flops(V1, 2048, 2048, adapter_every_step=True) > F.decode_flops(V1, 2048, 2048)
    one, two = F.forward_flops(V1, 1024, 1024), F.forward_flops(V1, 1024, 1024, batch=2)
    assert two["patch.qkv"] == 2 * one["patch.qkv"]


@pytest.mark.parametrize("release,params", [("flux_2k", 1_362_348_170), ("sdxl_2kto4k", 1_362_292_874),
                                            ("siglip_2k", 1_367_582_858), ("flux_v1.5", 1_400_199_315),
                                            ("flux2_v1.5", 1_400_346_771)])
def test_param_count_matches_the_released_checkpoints(release, params):
    cfg = RELEASES_BY_NAME[release].config
    assert F.param_count(cfg) == params
    assert M.weight_bytes(cfg, torch.bfloat16) == 2 * params


@pytest.mark.parametrize("release", sorted(RELEASES_BY_NAME))
@pytest.mark.parametrize("tiny", [False, True])
def test_param_count_counts_the_network_layer_by_layer(release, tiny):
    cfg = tiny_config(release) if tiny else RELEASES_BY_NAME[release].config
    with torch.device("meta"):
        net = PiDNet(cfg)
    assert F.param_count(cfg) == sum(p.numel() for p in net.parameters())


def test_estimate_is_monotone_in_size_batch_and_dtype():
    sides = [256, 512, 1024, 1536, 2048, 3072, 4096]
    for cfg in (V1, V15):
        for dtype in (torch.bfloat16, torch.float32):
            tot = [M.estimate_memory(cfg, s, s, 1, dtype).total for s in sides]
            assert tot == sorted(tot) and len(set(tot)) == len(tot)
            wide = [M.estimate_memory(cfg, 1024, s, 1, dtype).total for s in sides]
            tall = [M.estimate_memory(cfg, s, 1024, 1, dtype).total for s in sides]
            assert wide == sorted(wide) and tall == sorted(tall)
            batches = [M.estimate_memory(cfg, 1024, 1024, b, dtype).activations for b in (1, 2, 3, 4)]
            assert batches == sorted(batches) and len(set(batches)) == 4
        for s in sides:
            b16, f32 = (M.estimate_memory(cfg, s, s, 1, d) for d in (torch.bfloat16, torch.float32))
            assert b16.total < f32.total and b16.weights * 2 == f32.weights
            chunked = M.estimate_memory(cfg, s, s, 1, torch.bfloat16, chunk=256).activations
            assert chunked <= M.estimate_memory(cfg, s, s, 1, torch.bfloat16, chunk=None).activations
    tiles = [M.estimate_tiled_memory(V1, 4096, 4096, (t, t)).total for t in (512, 1024, 2048, 2688)]
    assert tiles == sorted(tiles)


@pytest.mark.parametrize("size,batch,dtype", [((1024, 1024), 1, torch.bfloat16), ((2048, 2048), 1, torch.bfloat16),
                                              ((4096, 4096), 1, torch.bfloat16), ((2304, 4096), 1, torch.float32),
                                              ((2048, 2048), 2, torch.bfloat16)])
def test_estimate_bounds_an_exact_trace_of_the_real_decode(size, batch, dtype):
    """The full-size network on the meta device: every activation the decode allocates is
    counted (bench/memtrace.py); the estimate must cover it without wasting more than half."""
    dec = meta_decoder(V15, dtype)
    plan = M.whole_plan(V15, *size, batch, dtype)
    assert (plan.chunk is None) == (size == (1024, 1024))
    peak = traced_peak(dec, plan, steps=1).peak
    assert peak <= plan.estimate.activations <= 1.5 * peak


def test_plan_picks_whole_or_tiles_for_a_budget():
    gb8 = 8 * 10**9
    p = M.plan_decode(V15, 2048, 2048, 1, torch.bfloat16, gb8, max_tile=4096)
    assert not p.tiled and p.estimate.total <= gb8
    p = M.plan_decode(V1, 4096, 4096, 1, torch.bfloat16, gb8, max_tile=ENVELOPE_2K[1])
    assert p.tiled and max(p.tile_size) <= ENVELOPE_2K[1] and p.estimate.total <= gb8
    sides = []
    for budget in (8e9, 5e9, 4e9, 3.5e9):
        p = M.plan_decode(V15, 4096, 4096, 1, torch.bfloat16, int(budget), max_tile=4096)
        assert p.estimate.total <= budget
        sides.append(max(p.tile_size or p.output_size))
    assert sides == sorted(sides, reverse=True) and sides[0] == 4096 and sides[-1] < 4096
    huge = M.plan_decode(V15, 8192, 8192, 1, torch.bfloat16, gb8, max_tile=4096)
    assert huge.tiled and not huge.state_on_device and huge.estimate.total <= gb8
    small = M.plan_decode(V15, 4096, 4096, 1, torch.bfloat16, 1, max_tile=4096)
    assert small.tile_size == (M.MIN_TILE_PX, M.MIN_TILE_PX)          # nothing fits: smallest tiles
    assert M.smaller_plan(V15, small) is None
    half = M.smaller_plan(V15, M.whole_plan(V15, 2048, 1024))
    assert half.tile_size == (1024, 512)
