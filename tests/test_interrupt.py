"""Interruption mid-decode leaves no partial state.

A decode is stopped the way ComfyUI stops it: the step callback raises (ComfyUI's
``InterruptProcessingException`` is an ordinary ``Exception``; Ctrl-C is a ``KeyboardInterrupt``).
Afterwards the decoder must be exactly as before: the next decode is bit-identical to one from a
freshly loaded decoder, the weights and module flags are untouched, and no tensor created by the
aborted decode is still alive (counted through ``gc``; RSS as a coarse second check). The CUDA
variant (allocated memory back to its baseline) runs only where a GPU is present.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch
from conftest import NEEDS_CUDA

from pid_core import DecodeOptions, load_decoder
from pid_core.network.random_weights import random_state_dict, tiny_config

# The smallest tiny net that still has every part (gates, PiT gate, adapter convs, 2 patch blocks).
MICRO = dict(patch_depth=2, adapter_res_blocks=1)
LATENT = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
TEXT = torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(1))
ARGS = dict(latent_format="flux", seed=11, steps=4)


class Interrupted(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict(tiny_config("flux_v1.5", **MICRO), seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def module_state(net):
    return {
        "params": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "training": [m.training for m in net.modules()],
        "grad": [p.requires_grad for p in net.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()),
        "attrs": {k: v for k, v in vars(net).items() if not k.startswith("_")},
        "devices": {p.device for p in net.parameters()},
        "dtypes": {p.dtype for p in net.parameters()},
    }


def assert_same_state(a, b):
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for key in ("training", "grad", "hooks", "attrs", "devices", "dtypes"):
        assert a[key] == b[key], key


def interrupt_at(stop: int, exc=Interrupted):
    calls = []

    def callback(step, total):
        calls.append((step, total))
        if step == stop:
            raise exc(f"interrupted at step {step}")

    return callback, calls


def run_interrupted(dec, stop: int, exc=Interrupted) -> list:
    """Decode until the callback raises at ``stop``; swallow the exception and drop its traceback."""
    callback, calls = interrupt_at(stop, exc)
    try:
        dec.decode(LATENT, 0.2, TEXT, options=DecodeOptions(callback=callback), **ARGS)
    except exc:
        pass
    else:
        raise AssertionError("the callback's exception did not stop the decode")
    return calls


@pytest.mark.parametrize("stop", [1, 2, 3, 4])
def test_next_decode_is_bit_identical_to_a_fresh_one(state_dict, stop):
    reference = load_decoder(state_dict, dtype="fp32").decode(LATENT, 0.2, TEXT, **ARGS)

    dec = load_decoder(state_dict, dtype="fp32")
    assert torch.equal(dec.decode(LATENT, 0.2, TEXT, **ARGS), reference)  # warm-up (RoPE caches)
    before = module_state(dec.net)
    baseline = live_tensors()

    calls = run_interrupted(dec, stop)
    assert calls == [(i, 4) for i in range(1, stop + 1)]  # stopped right at the raising step
    assert live_tensors() == baseline, "tensors of the aborted decode are still alive"
    assert_same_state(before, module_state(dec.net))

    again = dec.decode(LATENT, 0.2, TEXT, **ARGS)
    assert torch.equal(again, reference)
    del again
    assert live_tensors() == baseline


def test_exception_type_and_message_reach_the_caller(state_dict):
    dec = load_decoder(state_dict, dtype="fp32")
    callback, _ = interrupt_at(2)
    with pytest.raises(Interrupted, match="interrupted at step 2"):
        dec.decode(LATENT, 0.2, TEXT, options=DecodeOptions(callback=callback), **ARGS)


def test_keyboard_interrupt_leaves_no_state(state_dict):
    dec = load_decoder(state_dict, dtype="fp32")
    reference = dec.decode(LATENT, 0.2, TEXT, **ARGS)
    before = module_state(dec.net)
    baseline = live_tensors()
    run_interrupted(dec, 2, KeyboardInterrupt)
    assert live_tensors() == baseline
    assert_same_state(before, module_state(dec.net))
    assert not torch.is_inference_mode_enabled()  # the decode's inference_mode was exited
    assert torch.equal(dec.decode(LATENT, 0.2, TEXT, **ARGS), reference)


def test_different_request_after_interruption(state_dict):
    """An interrupted decode at one size/seed does not leak into a decode at another."""
    fresh = load_decoder(state_dict, dtype="fp32")
    other = torch.randn(2, 16, 2, 3, generator=torch.Generator().manual_seed(5))
    want = fresh.decode(other, 0.0, TEXT, latent_format="flux", seed=99, steps=3)
    dec = load_decoder(state_dict, dtype="fp32")
    run_interrupted(dec, 2)
    got = dec.decode(other, 0.0, TEXT, latent_format="flux", seed=99, steps=3)
    assert torch.equal(got, want)


def test_memory_returns_to_baseline_over_repeated_interruptions(state_dict):
    """RSS after 30 interrupted decodes stays within a few MB of the baseline (CPU)."""
    dec = load_decoder(state_dict, dtype="fp32")
    for stop in (1, 2, 3, 4):  # warm every code path and allocator size class
        run_interrupted(dec, stop)
    dec.decode(LATENT, 0.2, TEXT, **ARGS)
    baseline_tensors = live_tensors()
    rss0 = rss_bytes()
    for i in range(30):
        run_interrupted(dec, 1 + i % 4)
    growth = rss_bytes() - rss0
    assert live_tensors() == baseline_tensors
    # one decode's working set here is < 2 MB; 30 leaked ones would exceed the bound
    assert growth < 16 * 2**20, f"RSS grew {growth / 2**20:.1f} MB over 30 interrupted decodes"


def test_tiled_decode_interrupted_between_tiles(state_dict):
    dec = load_decoder(state_dict, dtype="fp32")
    reference = load_decoder(state_dict, dtype="fp32").decode(LATENT, 0.2, TEXT, **ARGS)
    callback, calls = interrupt_at(2)
    try:
        dec.decode(LATENT, 0.2, TEXT, plan=dec.plan(LATENT.shape, tile=(64, 64)),
                   options=DecodeOptions(callback=callback), **ARGS)
    except Interrupted:
        pass
    assert calls and calls[-1][0] == 2
    assert torch.equal(dec.decode(LATENT, 0.2, TEXT, **ARGS), reference)


@pytest.mark.gpu
@NEEDS_CUDA
def test_cuda_memory_back_to_baseline_after_interruption(state_dict):
    dec = load_decoder(state_dict, device="cuda", dtype="bf16")
    latent, text = LATENT, TEXT   # as a host hands them over: checked on the CPU, moved by the decoder
    reference = dec.decode(latent, 0.2, text, **ARGS)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    for stop in (1, 2, 3, 4):
        callback, _ = interrupt_at(stop)
        try:
            dec.decode(latent, 0.2, text, options=DecodeOptions(callback=callback), **ARGS)
        except Interrupted:
            pass
        gc.collect()
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == base, f"stop {stop}"
    assert torch.equal(dec.decode(latent, 0.2, text, **ARGS), reference)
