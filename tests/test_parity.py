"""Parity with the upstream reference outputs in tests/fixtures, by the tolerance rule in conftest.py:
float64 within 32 and fp32 within 64 units of eps32 x max|reference|; defects fail by a wide margin."""

from types import SimpleNamespace

import pytest
import torch
from conftest import FP32_ULPS, FP64_ULPS, PARITY_NAMES, assert_fp_close, load_parity, ulps_apart

from pid_core.decoding.decoder import load_decoder
from pid_core.decoding.sampler import sample, t_schedule, velocity_to_x0
from pid_core.network.config import from_upstream_kwargs
from pid_core.network.model import PiDNet

INPUTS = ("input.x_t", "input.timestep", "input.context", "input.lq_latent", "input.degrade_sigma")


def _net(meta, tensors):
    net = PiDNet(from_upstream_kwargs(meta["pidnet_kwargs"])).eval()
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
    return net


def _forward(net, t, dtype=torch.float32):
    with torch.no_grad():
        return net.to(dtype)(*[t[k].to(dtype) for k in INPUTS])


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_forward_matches_upstream(name):
    meta, t = load_parity(name)
    assert_fp_close(_forward(_net(meta, t), t), t["output.v"], FP32_ULPS)


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_forward_in_float64_matches_upstream(name):
    """Our maths in float64 vs upstream's fp32 output: only the fixture's own rounding remains,
    the same on every CPU, so the bound is tight."""
    meta, t = load_parity(name)
    assert_fp_close(_forward(_net(meta, t), t, torch.float64), t["output.v"], FP64_ULPS)


DEFECTS = {
    # one part in a thousand (about 1000 ulps) of one weight row of a patch-block MLP
    "weight_row": lambda net: net.patch_blocks[1].mlp_x.w2.weight[0].mul_(1 + 2 ** -10),
    # RMSNorm epsilon 1e-5 instead of upstream's 1e-6
    "norm_eps": lambda net: [setattr(m, "eps", 1e-5) for m in net.modules() if hasattr(m, "eps")
                             and not isinstance(m, torch.nn.GroupNorm)],
}


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("name", PARITY_NAMES)
def test_tolerance_catches_small_defects(name, defect):
    """Negative controls: a small real defect fails both bounds by a wide margin."""
    meta, t = load_parity(name)
    net = _net(meta, t)
    with torch.no_grad():
        DEFECTS[defect](net)
    for dtype, bound in ((torch.float32, FP32_ULPS), (torch.float64, FP64_ULPS)):
        apart = ulps_apart(_forward(net, t, dtype), t["output.v"])
        assert apart > 2 * bound, f"{defect} in {dtype}: only {apart:.1f} units from the reference"


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_intermediates_match_upstream(name):
    """Embedders and every adapter output agree too (localises a regression)."""
    meta, t = load_parity(name)
    net = _net(meta, t)
    with torch.no_grad():
        assert_fp_close(net.t_embedder(t["input.timestep"]), t["debug.t_embedder_out"])
        assert_fp_close(net.y_embedder(t["input.context"]), t["debug.y_embedder_out"])
        feats = net.lq_proj(t["input.lq_latent"], net.grid_for(t["input.x_t"]))
    n_out = len([k for k in t if k.startswith("debug.lq_proj_out.")])
    assert len(feats) == n_out
    for i, f in enumerate(feats):
        assert_fp_close(f, t[f"debug.lq_proj_out.{i}"])


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_sampler_matches_upstream(name):
    """The 4-step loop from the recorded noise and re-noise draws reproduces sampler.output."""
    meta, t = load_parity(name)
    net = _net(meta, t)
    y, z, s = t["input.context"][1:2], t["input.lq_latent"][1:2], t["input.degrade_sigma"][1:2]
    tokens = net.lq_proj.encode(z, net.grid_for(t["sampler.noise"]))
    calls = []

    def x0(x, tc):
        calls.append(tc)
        return velocity_to_x0(x, tc, net.velocity(x, torch.full((1,), tc) * 1000, y, tokens, s))

    draws = iter([t["sampler.noise"]] + [t[f"sampler.eps.{k}"] for k in range(3)])
    with torch.no_grad():
        out = sample(x0, SimpleNamespace(next=lambda into=None: next(draws).clone()), t_schedule(4))
    assert_fp_close(out, t["sampler.output"])
    assert calls == [float(v) for v in t["sampler.t_list"][:4]]      # upstream's fp32 times


def test_adapter_once_equals_adapter_every_step():
    meta, t = load_parity("flux_v1pt5")
    net = _net(meta, t)
    args = (t["input.x_t"], t["input.timestep"], t["input.context"])
    with torch.no_grad():
        every = net(*args, t["input.lq_latent"], t["input.degrade_sigma"])
        tokens = net.lq_proj.encode(t["input.lq_latent"], net.grid_for(t["input.x_t"]))
        once = net.velocity(*args, tokens, t["input.degrade_sigma"])
        again = net.velocity(*args, tokens, t["input.degrade_sigma"])   # features reused
    assert torch.equal(every, once) and torch.equal(once, again)


def test_fixture_loads_through_public_api_and_decodes():
    meta, t = load_parity("flux_2k")
    dec = load_decoder({k: v for k, v in t.items() if k.startswith("net.")}, dtype="fp32")
    assert dec.info.family == "16ch" and dec.info.version == "v1"
    img = dec.decode(t["input.lq_latent"][:1], 0.0, t["input.context"][:1], latent_format="normalized")
    assert img.shape == (1, 3, 128, 64) and 0 <= img.min() and img.max() <= 1
