"""Shared fixtures: tiny random PiD nets with real key names, and the upstream parity fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pid_core.random_weights import random_state_dict, tiny_config

FIXTURES = Path(__file__).parent / "fixtures"
PARITY_NAMES = ("flux_2k", "flux2_2k", "flux_v1pt5", "flux2_v1pt5")


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
