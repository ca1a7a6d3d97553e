"""The GPU path, proven on the CPU: the network call compiles as one graph for every kind of net,
compile is reachable and safe, a step moves nothing between host and device but the noise, the
kernel count does not grow with the image, and the latent reaches the network in bf16."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from conftest import assert_fp_close

from bench import gpu_path
from pid_core.decoding import compile as compile_mod
from pid_core.decoding.decoder import DecodeOptions, PiDDecoder, load_decoder
from pid_core.errors import PiDInputError


@pytest.mark.parametrize("release", gpu_path.KINDS)
def test_the_network_call_is_one_graph_for_every_kind_of_net(release):
    rows = gpu_path.graph_breaks([release])
    assert {r["input"] for r in rows} == {"whole", "whole, chunked", "tile-sized"}
    for r in rows:
        assert (r["graphs"], r["breaks"]) == (1, 0), f"{release} {r['input']}: {r['reasons']}"


@pytest.mark.parametrize("size,tile", [(256, None), (512, 256)])
def test_a_step_moves_only_the_noise_between_host_and_device(size, tile):
    """Net on the meta device, CPU inputs: per step no host reads of device tensors, one
    host-to-device copy (the device-independent noise draw), no device-to-host copy."""
    r = gpu_path.host_traffic(size, tile)
    assert r["tiles"] == (1 if tile is None else 9)
    assert r["per_step"] == {"syncs": 0, "h2d": 1, "d2h": 0}
    assert r["per_decode_2_steps"]["syncs"] <= 1          # the final finite check, once per decode


def test_kernel_count_does_not_grow_with_the_image():
    ops = {r["side"]: r["ops"] for r in gpu_path.op_counts((2048, 4096))}
    assert ops[4096] <= 1.5 * ops[2048], ops


def test_the_latent_reaches_the_network_in_bf16_in_every_dtype(tiny_sd_factory, monkeypatch):
    """Upstream hands PiD a bf16 latent; an fp32 decode then equals one of the bf16-rounded latent."""
    dec = load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32")
    seen = []
    encode = dec.net.lq_proj.encode
    monkeypatch.setattr(dec.net.lq_proj, "encode", lambda z, grid: seen.append(z.dtype) or encode(z, grid))
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(1, 16, 2, 3, generator=g) * 3, torch.randn(1, 300, 2304, generator=g)
    out = dec.decode(z, 0.0, y, latent_format="normalized", steps=2)
    assert seen == [torch.bfloat16]
    assert torch.equal(out, dec.decode(z.bfloat16().float(), 0.0, y, latent_format="normalized", steps=2))


def _tiny_decoder(sd, compile=None):
    dec = load_decoder(sd, dtype="fp32")
    return dec if compile is None else PiDDecoder(dec.net, dec.info, compile=compile)


def _inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, 16, 2, 2, generator=g), torch.randn(1, 300, 2304, generator=g)


def test_compile_is_opt_in_and_checked(tiny_sd_factory):
    dec = load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32")
    assert dec.compile is None and dec.network == dec.net.velocity
    with pytest.raises(PiDInputError, match="compile='fastest' is not supported"):
        PiDDecoder(dec.net, dec.info, compile="fastest")
    assert compile_mod.COMPILE_CHOICES == {"off": None, "on": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def test_graphs_are_made_once_per_shape_and_kept_across_decodes(tiny_sd_factory, monkeypatch, caplog):
    made = []
    real = torch.compile

    def counting_compile(fn, **kw):
        made.append(kw)
        return real(fn, **{**kw, "backend": "eager", "mode": None})   # dynamo's graph, no codegen

    monkeypatch.setattr(torch, "compile", counting_compile)
    dec = _tiny_decoder(tiny_sd_factory("flux_v1.5"), "default")
    z, y = _inputs()
    eager = load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32").decode(z, 0.3, y, latent_format="flux")
    with caplog.at_level(logging.INFO, logger="pid_core.decoding.compile"):
        first = dec.decode(z, 0.3, y, latent_format="flux")
        again = dec.decode(z, 0.3, y, latent_format="flux", seed=1)
        dec.decode(torch.randn(1, 16, 2, 3), 0.3, y, latent_format="flux")
    assert made == [dict(dynamic=False, fullgraph=True, backend="inductor", mode="default")]
    compiled = [r.getMessage() for r in caplog.records if "compiled the network" in r.getMessage()]
    assert len(compiled) == 2 and "1x3x64x64 float32" in compiled[0] and "1x3x64x96" in compiled[1]
    assert torch.equal(first, eager) and not torch.equal(first, again)


def test_a_broken_compiler_falls_back_to_eager_with_one_warning(tiny_sd_factory, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("backend='inductor' raised:\nCppCompileError: C++ compile error\n\nCommand:\ng++ x.cpp")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    dec = _tiny_decoder(tiny_sd_factory("flux_v1.5"), "default")
    z, y = _inputs()
    with caplog.at_level(logging.WARNING, logger="pid_core.decoding.compile"):
        out = dec.decode(z, 0.3, y, latent_format="flux")
        dec.decode(z, 0.3, y, latent_format="flux")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not compile the network" in warnings[0]
    assert "(RuntimeError: CppCompileError: C++ compile error)" in warnings[0]     # the cause, not "raised:"
    assert "C++ compiler for the CPU, Triton for NVIDIA GPUs" in warnings[0] and "set compile to off" in warnings[0]
    assert torch.equal(out, load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32").decode(
        z, 0.3, y, latent_format="flux"))


def test_an_interrupted_compiled_decode_leaves_it_usable(tiny_sd_factory, monkeypatch):
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **{**kw, "backend": "eager", "mode": None}))
    dec = _tiny_decoder(tiny_sd_factory("flux_v1.5"), "default")
    z, y = _inputs()

    class Stop(Exception):
        pass

    def stop(i, n):
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        dec.decode(z, 0.3, y, latent_format="flux", options=DecodeOptions(callback=stop))
    assert torch.equal(dec.decode(z, 0.3, y, latent_format="flux"),
                       load_decoder(tiny_sd_factory("flux_v1.5"), dtype="fp32").decode(z, 0.3, y, latent_format="flux"))


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="needs a C++ compiler for torch.compile on the CPU")
def test_compiled_decode_equals_eager(tiny_sd_factory):
    """The real inductor compile (about a minute on 2 cores): fp32 within fp32 rounding of eager."""
    sd = tiny_sd_factory("flux_v1.5", patch_depth=2, adapter_res_blocks=1)
    z, y = _inputs()
    eager = _tiny_decoder(sd).decode(z, 0.3, y, latent_format="flux", steps=2)
    dec = _tiny_decoder(sd, "default")
    compiled = dec.decode(z, 0.3, y, latent_format="flux", steps=2)
    assert dec.network.failed is None and dec.network.shapes, dec.network.failed
    assert_fp_close(compiled, eager)


def test_the_one_shot_gpu_script_runs_its_plan_on_the_cpu(tmp_path):
    """``bench/gpu_check.py --dry-run``: every planned case, tiny, so the GPU script cannot rot."""
    from bench import gpu_check
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    planned = [c.name for c in gpu_check.plan_cases(8.0, upstream=False)]
    assert [r["case"] for r in data["results"]] == planned and not data["skipped"]
    assert all("error" not in r and r["decode_s"] > 0 and r["estimate_gib"] > 0 for r in data["results"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "compiled" in table and "tiled, budget 8 GB" in table and "noise device" in table
    assert (tmp_path / "gpu_check.csv").read_text().count("\n") == len(planned) + 1
