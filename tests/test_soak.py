"""Soak: 200 decodes in a row with flat memory.

CPU: the smallest tiny net, 1x1 and 1x2 latents, steps cycling 1..4, seeds and sigmas varying, and
every fifth call a hostile input that must fail with a PiDError (a server meets both). After a
warm-up that fills the RoPE caches, resident memory (``/proc/self/statm``) may grow by at most
``RSS_BOUND`` over the 200 decodes and the number of live tensors must not grow at all. The figures
are printed (``pytest -s``) and attached to the test report (``record_property``).
GPU: allocated memory returns to its baseline after every decode (runs only with CUDA).
"""

from __future__ import annotations

import gc
import os
import time

import pytest
import torch
from conftest import NEEDS_CUDA

from pid_core import load_decoder
from pid_core.errors import PiDError
from pid_core.network.random_weights import random_state_dict, tiny_config

N_DECODES = 200
WARMUP = 24
RSS_BOUND = 8 * 2**20      # 8 MB over 200 decodes (one decode's working set is ~1 MB)
MICRO = dict(patch_depth=2, adapter_res_blocks=1)
TEXT = torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(1))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def _request(i: int, device="cpu"):
    """The i-th call of the soak: (kwargs, expect_error)."""
    gen = torch.Generator().manual_seed(i)
    w = 1 + i % 2
    latent = torch.randn(1, 16, 1, w, generator=gen)
    kw = dict(latent=latent, sigma=(i % 7) / 10, seed=i, steps=1 + i % 4)
    hostile = i % 5 == 4
    if hostile:
        kind = (i // 5) % 4
        if kind == 0:
            kw["latent"] = torch.full_like(latent, float("nan"))
        elif kind == 1:
            kw["latent"] = torch.randn(1, 4, 1, w, generator=gen)
        elif kind == 2:
            kw["sigma"] = 1.5
        else:
            kw["steps"] = 0
    kw["latent"] = kw["latent"].to(device)
    return kw, hostile


def _call(dec, kw, text):
    return dec.decode(kw["latent"], kw["sigma"], text, seed=kw["seed"], steps=kw["steps"],
                      latent_format="flux")


def _run(dec, i, text, device="cpu"):
    kw, hostile = _request(i, device)
    if hostile:
        try:
            _call(dec, kw, text)
        except PiDError:
            return None
        raise AssertionError(f"call {i}: hostile input was accepted")
    out = _call(dec, kw, text)
    assert out.shape == (1, 3, 32, 32 * kw["latent"].shape[-1])
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


def test_200_decodes_cpu_flat_memory(record_property):
    dec = load_decoder(random_state_dict(tiny_config("flux_v1.5", **MICRO), seed=2), dtype="fp32")
    first = _run(dec, 0, TEXT)  # kept to check determinism at the end
    for i in range(1, WARMUP):
        _run(dec, i, TEXT)
    tensors0, rss0 = live_tensors(), rss_bytes()
    samples = [rss0]
    t0 = time.perf_counter()
    for i in range(N_DECODES):
        _run(dec, WARMUP + i, TEXT)  # the image is dropped at once, as a server would
        if (i + 1) % 20 == 0:
            samples.append(rss_bytes())
    elapsed = time.perf_counter() - t0
    tensors1, rss1 = live_tensors(), rss_bytes()
    growth = rss1 - rss0
    mb = 2**20
    summary = (f"soak: {N_DECODES} decodes ({N_DECODES // 5} hostile) in {elapsed:.1f} s; RSS start "
               f"{rss0 / mb:.1f} MB, end {rss1 / mb:.1f} MB, growth {growth / mb:+.2f} MB (bound "
               f"{RSS_BOUND / mb:.0f} MB), max {max(samples) / mb:.1f} MB; live tensors {tensors0} -> "
               f"{tensors1}")
    print("\n" + summary)
    for key, value in (("rss_start_mb", rss0 / mb), ("rss_end_mb", rss1 / mb),
                       ("rss_growth_mb", growth / mb), ("live_tensors_start", tensors0),
                       ("live_tensors_end", tensors1), ("seconds", elapsed)):
        record_property(key, round(value, 3) if isinstance(value, float) else value)
    assert tensors1 == tensors0, summary
    assert growth < RSS_BOUND, summary
    # still deterministic at the end of the run: the first decode, repeated, is bit-identical
    assert torch.equal(_run(dec, 0, TEXT), first)


@pytest.mark.gpu
@NEEDS_CUDA
def test_200_decodes_cuda_memory_returns_to_baseline():
    dec = load_decoder(random_state_dict(tiny_config("flux_v1.5", **MICRO), seed=2), device="cuda",
                       dtype="bf16")
    text = TEXT.cuda()
    for i in range(WARMUP):
        _run(dec, i, text, "cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    peak = 0
    for i in range(N_DECODES):
        out = _run(dec, WARMUP + i, text, "cuda")
        del out
        torch.cuda.synchronize()
        now = torch.cuda.memory_allocated()
        peak = max(peak, torch.cuda.max_memory_allocated())
        assert now == base, f"decode {i}: {now - base} bytes still allocated"
