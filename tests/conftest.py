"""Shared fixtures: tiny random PiD nets with real key names, and the upstream parity fixtures."""

from __future__ import annotations

import dataclasses
import getpass
import importlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pid_core.network.random_weights import random_state_dict, tiny_config

# torch.compile's on-disk kernel cache is not keyed by ATEN_CPU_CAPABILITY (torch 2.13): kernels
# generated for AVX2 fail to build in a later run under ATEN_CPU_CAPABILITY=default ("'at::vec' has
# not been declared"). The suite keeps one cache per kernel set unless TORCHINDUCTOR_CACHE_DIR is set.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / (
    f"pid_tests_inductor_{getpass.getuser()}_{torch.backends.cpu.get_cpu_capability().lower()}")))

FIXTURES = Path(__file__).parent / "fixtures"
PARITY_NAMES = ("flux_2k", "flux2_2k", "flux_v1pt5", "flux2_v1pt5")

# Tolerance rule for comparing two evaluations of a network against each other. Rounding in a
# deep net grows with its activations, so the bound is in units of fp32's epsilon (2^-23) times
# the reference's scale max|ref|, not per element. Measured with tools/parity_spread.py on the
# fixtures (ATEN_CPU_CAPABILITY default/avx2/avx512, 1 and 2 threads, AMD EPYC with and without
# AVX-512): upstream's fp32 output vs our float64 forward <= 14.5 units (the fixtures' own rounding,
# the same on every CPU); our fp32 forward vs our float64 forward <= 21.4 units; fp32 vs fp32 up to
# 23.2 units (AVX2-only EPYC, default kernels) and 31 reported on an Intel Xeon (MKL). So:
# - float64 vs a fixture (only the fixture's rounding): 32 units, twice the largest measured;
# - fp32 vs fp32 (rounding on both sides): 64 units.
# A defect of one part in a thousand of one weight row, or a norm epsilon off by 10x, moves the
# output by 189..607 units (tests/test_parity.py's negative controls).
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")

EPS32 = 2.0 ** -23
FP64_ULPS = 32
FP32_ULPS = 64


def ulps_apart(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| in units of eps32 x max|ref|."""
    return float((got.double() - ref.double()).abs().max()) / (EPS32 * float(ref.abs().max()))


def assert_fp_close(got: torch.Tensor, ref: torch.Tensor, ulps: float = FP32_ULPS) -> None:
    """``got`` within ``ulps`` x eps32 x max|ref| of ``ref`` everywhere (same shape)."""
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
    apart = ulps_apart(got, ref)
    assert apart <= ulps, (f"{apart:.1f} units of eps32 x max|ref| apart (max|ref| = "
                           f"{float(ref.abs().max()):.4g}); allowed {ulps}")


def load_parity(name: str):
    meta = json.loads((FIXTURES / f"pid_parity_{name}.json").read_text())
    # clone: safetensors storage may be unaligned, which changes CPU matmul rounding (PID_SPEC 9)
    tensors = {k: v.clone() for k, v in load_file(str(FIXTURES / f"pid_parity_{name}.safetensors")).items()}
    return meta, tensors


@pytest.fixture(scope="session")
def tiny_sd_factory():
    cache = {}

    def make(release="flux_v1.5", seed=0, prefix="net.", **overrides):
        key = (release, seed, prefix, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = random_state_dict(tiny_config(release, **overrides), seed=seed, prefix=prefix)
        return dict(cache[key])

    return make


@pytest.fixture
def text_features():
    return torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def one_thread():
    """Tiny GEMMs are slower with 2 threads on a busy 2-core machine; results do not change."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def with_envelope(decoder, envelope):
    """A decoder sharing ``decoder``'s net with another trained size envelope ((min, max) px or None)."""
    if envelope is not None and not hasattr(envelope, "min_side"):
        config = importlib.import_module(type(decoder).__module__.rsplit(".", 2)[0] + ".network.config")
        envelope = config.Envelope(int(envelope[0]), int(envelope[1]), decoder.info.resolution)
    new = type(decoder)(decoder.net, dataclasses.replace(decoder.info, envelope=envelope))
    new.compile, new.network = decoder.compile, decoder.network   # the same (compiled) network call
    return new
