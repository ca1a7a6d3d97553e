"""Hostile inputs: every bad input gets a typed error whose message says what was seen, what was
expected and how to fix it.

Each row of the tables below is one case: a call, the error class it must raise (checked by name
along the class hierarchy, so the same table works for ``pid_core`` and for the pack's own copy
imported by the node tests) and regular expressions that must all occur in the message. Inputs
that look hostile but are valid (float64 latents, SDXL VE sigmas, an empty prompt, an over-long
prompt) are in the ACCEPTED table with what they must produce instead; README.md lists every
message with its fix.

Node-level rows run the nodes' public functions without ComfyUI; the download's failure modes
are in tests/test_download.py (a local fake hub, no network).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import re
import types
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from conftest import with_envelope
from safetensors.torch import save_file

from pid_core import load_decoder
from pid_core.decoding.decoder import DecodeOptions
from pid_core.decoding.sizing import check_output_size
from pid_core.files.loading import resolve_dtype
from pid_core.network.random_weights import random_state_dict, tiny_config
from pid_core.text.recipe import CHI_PREAMBLE, build_token_batch, encode_captions

T = 2304  # text feature width


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Any], Any]       # env -> call that must raise
    error: str                      # class name expected in the raised error's MRO
    words: tuple[str, ...]          # regexes that must all occur in the message


# --- shared objects ------------------------------------------------------------------------------

def _size(dec, size, latent_hw=None):
    """The whole-image size rule, as the decoder applies it for ``dec``."""
    return check_output_size(size, dec.info.envelope, latent_hw, dec.info.output_factor)


def _sd(release: str, seed: int = 0):
    return random_state_dict(tiny_config(release), seed=seed)


@pytest.fixture(scope="module")
def decs():
    """Tiny decoders of four families (CPU, fp32)."""
    return types.SimpleNamespace(
        v1=load_decoder(_sd("flux_2k"), dtype="fp32"),          # 16 ch, flux/sd3
        v15=load_decoder(_sd("flux_v1.5"), dtype="fp32"),       # 16 ch, flux/qwenimage
        sdxl=load_decoder(_sd("sdxl_2kto4k"), dtype="fp32"),    # 4 ch
        flux2=load_decoder(_sd("flux2_v1.5"), dtype="fp32"),    # 128 ch
    )


@pytest.fixture
def env(decs, tmp_path, monkeypatch, caplog):
    return types.SimpleNamespace(d=decs, tmp=tmp_path, mp=monkeypatch, caplog=caplog)


def txt(batch=1, tokens=300, dim=T, fill=None):
    if fill is not None:
        return torch.full((batch, tokens, dim), fill)
    return torch.randn(batch, tokens, dim, generator=torch.Generator().manual_seed(1))


def lat(*shape, dtype=torch.float32, fill=None):
    if fill is not None:
        return torch.full(shape, fill, dtype=dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    return x.to(dtype)


def flux(e, latent, sigma=0.0, text=None, output_size=None, noise_frame=None, **kw):
    """Decode with the v1 16-channel tiny decoder as FLUX.1 (at ``output_size`` through its plan)."""
    kw.setdefault("latent_format", "flux")
    kw.setdefault("steps", 1)
    if output_size is not None:
        kw["plan"] = e.d.v1.plan(latent.shape, output_size)
    if noise_frame is not None:
        kw["options"] = DecodeOptions(noise_frame=noise_frame)
    return e.d.v1.decode(latent, sigma, txt() if text is None else text, **kw)


def _assert_error(case: Case, exc: BaseException):
    names = [c.__name__ for c in type(exc).__mro__]
    assert case.error in names, f"{case.id}: raised {type(exc).__name__}: {exc}"
    assert "PiDError" in names, f"{case.id}: {type(exc).__name__} is not a documented PiDError"
    msg = str(exc)
    for word in case.words:
        assert re.search(word, msg), f"{case.id}: {word!r} not in message:\n{msg}"
    # no torch-internal advice may leak into a user-facing message
    assert "weights_only` set to `False" not in msg and "Traceback" not in msg
    assert len(msg) >= 50, f"{case.id}: message too short to say what/expected/fix: {msg}"


def _run_cases(case: Case, e):
    with pytest.raises(Exception) as info:
        case.run(e)
    _assert_error(case, info.value)


# --- latents, sizes, sigma, steps, seeds, text features (pid_core.decoding.decoder) ----------------------

DECODE_CASES = [
    # channels vs checkpoint
    Case("sdxl_latent_into_flux_ckpt", lambda e: flux(e, lat(1, 4, 1, 1)), "LatentMismatchError",
         (r"expects 16-channel", r"has 4 channels", r"SDXL", r"Load the PiD checkpoint")),
    Case("flux_latent_into_sdxl_ckpt", lambda e: e.d.sdxl.decode(lat(1, 16, 1, 1), 0, txt()),
         "LatentMismatchError", (r"expects 4-channel", r"16 channels", r"FLUX\.1", r"Load the PiD")),
    Case("flux_latent_into_flux2_ckpt", lambda e: e.d.flux2.decode(lat(1, 16, 1, 1), 0, txt()),
         "LatentMismatchError", (r"expects 128-channel", r"16 channels", r"for the model that made")),
    Case("flux2_latent_into_flux_v15", lambda e: e.d.v15.decode(lat(1, 128, 1, 1), 0, txt(),
                                                              latent_format="flux"),
         "LatentMismatchError", (r"expects 16-channel", r"128 channels", r"FLUX\.2")),
    Case("zero_channels", lambda e: flux(e, lat(1, 0, 2, 2)), "LatentMismatchError",
         (r"expects 16-channel", r"0 channels",)),
    # ranks
    Case("latent_3d", lambda e: flux(e, lat(16, 2, 2)), "PiDInputError",
         (r"3-D latent of shape \(16, 2, 2\)", r"expected \[B,C,h,w\]", r"unsqueeze\(0\)")),
    Case("latent_6d", lambda e: flux(e, lat(1, 16, 1, 1, 2, 2)), "PiDInputError",
         (r"6-D latent", r"expected \[B,C,h,w\]", r"LATENT\['samples'\]")),
    Case("latent_video_3_frames", lambda e: flux(e, lat(1, 16, 3, 2, 2)), "PiDInputError",
         (r"3 frames", r"\[B,C,1,h,w\]", r"one frame at a time")),
    Case("latent_is_dict", lambda e: flux(e, {"samples": lat(1, 16, 1, 1)}), "PiDInputError",
         (r"got dict", r"not the LATENT dict")),
    Case("latent_is_none", lambda e: flux(e, None), "PiDInputError",
         (r"got NoneType", r"torch\.Tensor \[B,C,h,w\]")),
    # empty / sub-patch
    Case("empty_batch", lambda e: flux(e, lat(0, 16, 2, 2)), "PiDInputError",
         (r"empty dimension", r"\(0, 16, 2, 2\)", r"at least 1", r"check that node")),
    Case("zero_height", lambda e: flux(e, lat(1, 16, 0, 2)), "PiDInputError",
         (r"empty dimension", r"\(1, 16, 0, 2\)")),
    Case("sub_patch_output_8px", lambda e: flux(e, lat(1, 16, 1, 1), output_size=(8, 8)),
         "PiDInputError", (r"8x8 is invalid", r"multiples of 16", r"nearest valid size is 16x16")),
    Case("output_not_multiple_of_16", lambda e: flux(e, lat(1, 16, 1, 1), output_size=(100, 100)),
         "PiDInputError", (r"100x100", r"multiples of 16", r"96x96")),
    Case("output_2050x2048", lambda e: _size(e.d.v1, (2050, 2048)), "PiDInputError",
         (r"2050x2048", r"2048x2048")),
    Case("output_negative", lambda e: flux(e, lat(1, 16, 1, 1), output_size=(-32, 32)),
         "PiDInputError", (r"-32x32", r"positive multiples of 16")),
    Case("output_fractional", lambda e: flux(e, lat(1, 16, 1, 1), output_size=(32.5, 32)),
         "PiDInputError", (r"whole pixels", r"\(32\.5, 32\)", r"e\.g\. \(2048, 2048\)")),
    Case("output_three_sides", lambda e: flux(e, lat(1, 16, 1, 1), output_size=(32, 32, 32)),
         "PiDInputError", (r"\(height, width\)", r"\(32, 32, 32\)")),
    Case("output_is_text", lambda e: flux(e, lat(1, 16, 1, 1), output_size="4k"), "PiDInputError",
         (r"\(height, width\)", r"'4k'")),
    Case("output_swapped_h_w", lambda e: _size(e.d.v1, (64, 32), (1, 2)),
         "PiDInputError", (r"64x32", r"1x2 latent", r"32x64", r"swapped")),
    Case("output_stretched_4x", lambda e: _size(e.d.v1, (16, 512), (1, 1)),
         "PiDInputError", (r"stretched 32\.00x", r"Keep the latent's aspect")),
    # trained envelope (tiny nets have none; give one)
    Case("far_above_envelope", lambda e: with_envelope(e.d.v1, (16, 64)).decode(
        lat(1, 16, 1, 4), 0, txt(), latent_format="flux", steps=1), "PiDInputError",
         (r"32x128", r"outside what this checkpoint was trained for", r"16\.\.64 px",
          r"Choose a size in that range")),
    Case("far_below_envelope", lambda e: with_envelope(e.d.v1, (1536, 2688)).decode(
        lat(1, 16, 1, 1), 0, txt(), latent_format="flux", steps=1), "PiDInputError",
         (r"32x32", r"1536\.\.2688 px", r"artifacts")),
    Case("explicit_size_outside_envelope", lambda e: _size(with_envelope(e.d.v1, (1536, 2688)),
         (4096, 4096)), "PiDInputError", (r"4096x4096", r"2k: sides 1536\.\.2688")),
    # values and dtypes
    Case("nan_latent", lambda e: flux(e, lat(1, 16, 1, 1, fill=float("nan"))), "PiDInputError",
         (r"NaN or infinite", r"diverged", r"another seed")),
    Case("inf_latent", lambda e: flux(e, lat(1, 16, 1, 1, fill=float("inf"))), "PiDInputError",
         (r"NaN or infinite",)),
    Case("absurd_magnitude_latent", lambda e: flux(e, lat(1, 16, 1, 1, fill=3e30)),
         "PiDInputError", (r"reach 3e\+30", r"far below 10000", r"Connect the LATENT")),
    Case("int64_latent", lambda e: flux(e, lat(1, 16, 1, 1, dtype=torch.int64)), "PiDInputError",
         (r"torch\.int64", r"floating-point", r"Connect the LATENT")),
    Case("bool_latent", lambda e: flux(e, lat(1, 16, 1, 1, dtype=torch.bool)), "PiDInputError",
         (r"torch\.bool", r"floating-point")),
    Case("complex_latent", lambda e: flux(e, torch.randn(1, 16, 1, 1, dtype=torch.complex64)),
         "PiDInputError", (r"complex64", r"floating-point")),
    Case("meta_latent", lambda e: flux(e, torch.empty(1, 16, 1, 1, device="meta")), "PiDInputError",
         (r"'meta' device", r"pass a real tensor")),
    # batch of latent vs prompt / sigma
    Case("latent_batch_2_text_batch_3", lambda e: flux(e, lat(2, 16, 1, 1), text=txt(3)),
         "PiDInputError", (r"text features have batch 3", r"latent batch is 2",
                           r"one prompt for all latents or one per latent")),
    Case("sigma_batch_3_latent_batch_2", lambda e: flux(e, lat(2, 16, 1, 1), torch.tensor([.1, .2, .3])),
         "PiDInputError", (r"sigma has 3 values", r"latent batch is 2", r"one sigma or one per latent")),
    # text features
    Case("text_width_768", lambda e: flux(e, lat(1, 16, 1, 1), text=txt(dim=768)), "PiDInputError",
         (r"\[B, L, 2304\]", r"\(1, 300, 768\)", r"Encode the prompt")),
    Case("text_500_tokens", lambda e: flux(e, lat(1, 16, 1, 1), text=txt(tokens=500)),
         "PiDInputError", (r"500 tokens", r"1\.\.300")),
    Case("text_nan", lambda e: flux(e, lat(1, 16, 1, 1), text=txt(fill=float("nan"))),
         "PiDInputError", (r"NaN or infinite", r"overflowed", r"Re-encode the prompt .* bf16 or fp32")),
    Case("text_is_string", lambda e: flux(e, lat(1, 16, 1, 1), text="a cat"), "PiDInputError",
         (r"got str", r"pid_core\.text")),
    # sigma
    Case("sigma_negative", lambda e: flux(e, lat(1, 16, 1, 1), -0.1), "PiDInputError",
         (r"finite and >= 0", r"-0\.1", r"0 for a finished latent", r"PiD Stop Sigma")),
    Case("sigma_nan", lambda e: flux(e, lat(1, 16, 1, 1), float("nan")), "PiDInputError",
         (r"finite number", r"nan", r"PiD Stop Sigma")),
    Case("sigma_inf", lambda e: flux(e, lat(1, 16, 1, 1), float("inf")), "PiDInputError",
         (r"finite number", r"inf")),
    Case("sigma_tensor_nan", lambda e: flux(e, lat(1, 16, 1, 1), torch.tensor([float("nan")])),
         "PiDInputError", (r"finite and >= 0", r"\[nan\]")),
    Case("sigma_sdxl_negative", lambda e: e.d.sdxl.decode(lat(1, 4, 1, 1), -2.0, txt(), steps=1),
         "PiDInputError", (r"finite and >= 0", r"-2\.0")),
    Case("sigma_above_1_for_flow", lambda e: flux(e, lat(1, 16, 1, 1), 1.5), "PiDInputError",
         (r"sigma \[1\.5\] is above 1", r"flow-matching format 'flux'", r"\[0, 1\]",
          r"'sdxl' format for VE")),
    Case("sigma_sdxl_scale_for_flux2", lambda e: e.d.flux2.decode(lat(1, 128, 1, 1), 14.6, txt()),
         "PiDInputError", (r"14\.6", r"above 1", r"'flux2'")),
    Case("sigma_is_string", lambda e: flux(e, lat(1, 16, 1, 1), "0.5"), "PiDInputError",
         (r"number or a tensor", r"got str", r"'0\.5'")),
    Case("sigma_is_none", lambda e: flux(e, lat(1, 16, 1, 1), None), "PiDInputError",
         (r"got NoneType",)),
    Case("sigma_complex", lambda e: flux(e, lat(1, 16, 1, 1), torch.tensor([0.5j])), "PiDInputError",
         (r"real number", r"complex")),
    # steps
    Case("steps_0", lambda e: flux(e, lat(1, 16, 1, 1), steps=0), "PiDInputError",
         (r"steps=0 is not supported", r"trained for 4 steps", r"choose 1, 2, 3 or 4")),
    Case("steps_5", lambda e: flux(e, lat(1, 16, 1, 1), steps=5), "PiDInputError",
         (r"steps=5", r"repeat timesteps")),
    Case("steps_50", lambda e: flux(e, lat(1, 16, 1, 1), steps=50), "PiDInputError", (r"steps=50",)),
    Case("steps_fraction", lambda e: flux(e, lat(1, 16, 1, 1), steps=2.5), "PiDInputError",
         (r"steps=2\.5", r"choose 1, 2, 3 or 4")),
    Case("steps_string", lambda e: flux(e, lat(1, 16, 1, 1), steps="4"), "PiDInputError",
         (r"steps='4'",)),
    # seeds
    Case("seed_negative", lambda e: flux(e, lat(1, 16, 1, 1), seed=-1), "PiDInputError",
         (r"seed=-1 is out of range", r"0\.\.2\^64-1", r"non-negative integer")),
    Case("seed_2_pow_64", lambda e: flux(e, lat(1, 16, 1, 1), seed=2**64), "PiDInputError",
         (r"seed=18446744073709551616", r"0\.\.18446744073709551615")),
    Case("seed_fraction", lambda e: flux(e, lat(1, 16, 1, 1), seed=1.5), "PiDInputError",
         (r"seed=1\.5", r"whole number")),
    # latent format
    Case("format_unknown", lambda e: flux(e, lat(1, 16, 1, 1), latent_format="wan22"), "PiDInputError",
         (r"unknown latent format 'wan22'", r"Valid names: flux, sd3, sdxl, qwenimage, flux2")),
    Case("format_auto_ambiguous_16ch", lambda e: flux(e, lat(1, 16, 1, 1), latent_format=None),
         "LatentMismatchError", (r"flux, sd3", r"cannot be told apart",
                                 r"Choose the latent format of the model that made the latent")),
    # a latent no format of the checkpoint fits: the channel mismatch comes before any format
    # question (explicit, or 'auto' on a checkpoint with several 16-channel formats)
    Case("format_sdxl_on_flux_ckpt", lambda e: flux(e, lat(1, 4, 1, 1), latent_format="sdxl"),
         "LatentMismatchError", (r"expects 16-channel latents", r"has 4 channels",
                                 r"looks like a SDXL latent")),
    Case("format_auto_4ch_on_16ch_ckpt", lambda e: flux(e, lat(1, 4, 1, 1), latent_format=None),
         "LatentMismatchError", (r"expects 16-channel latents", r"has 4 channels",
                                 r"looks like a SDXL latent")),
    Case("format_sdxl_name_on_flux_ckpt", lambda e: flux(e, lat(1, 16, 1, 1), latent_format="sdxl"),
         "LatentMismatchError", (r"'sdxl' \(SDXL VAE\) does not fit", r"flux/sd3",
                                 r"Load the PiD checkpoint made for sdxl")),
    Case("format_sd3_on_v15_ckpt", lambda e: e.d.v15.decode(lat(1, 16, 1, 1), 0, txt(),
                                                           latent_format="sd3"),
         "LatentMismatchError", (r"'sd3'", r"flux/qwenimage", r"v1\.5")),
    Case("noise_frame_unknown", lambda e: flux(e, lat(1, 16, 1, 1), noise_frame="vp"),
         "PiDInputError", (r"noise frame 'vp' is unknown", r"'flow', 'comfy_flow' or 've'")),
    Case("plan_for_another_latent", lambda e: flux(e, lat(2, 16, 1, 1), plan=e.d.v1.plan((1, 16, 1, 1))),
         "PiDInputError", (r"plan is for batch 1 of \(1, 1\) latents", r"latent is \(2, 16, 1, 1\)", r"plan\(\)")),
    Case("format_not_a_name", lambda e: flux(e, lat(1, 16, 1, 1), latent_format=16), "PiDInputError",
         (r"got int", r"Valid names")),
    Case("compute_dtype_int8", lambda e: resolve_dtype("int8", "cpu"), "PiDInputError",
         (r"'int8' is unknown", r"auto, bf16, fp16 or fp32")),
]


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: c.id)
def test_decode_inputs(case, env):
    _run_cases(case, env)


def test_decode_refuses_stretching_output_size(env):
    with pytest.raises(Exception) as info:
        flux(env, lat(1, 16, 1, 2), output_size=(64, 32))
    _assert_error(DECODE_CASES[[c.id for c in DECODE_CASES].index("output_swapped_h_w")], info.value)


def test_decode_never_returns_nan_pixels():
    sd = _sd("flux_2k")
    sd["net.final_layer.linear.bias"] = torch.full_like(sd["net.final_layer.linear.bias"], float("nan"))
    dec = load_decoder(sd, dtype="fp32")
    with pytest.raises(Exception) as info:
        dec.decode(lat(1, 16, 1, 1), 0.0, txt(), latent_format="flux", steps=1)
    names = [c.__name__ for c in type(info.value).__mro__]
    assert "PiDError" in names and re.search(r"NaN|not finite", str(info.value))


# --- checkpoint files (pid_core.files.checkpoint_io / detect / loading) -------------------------------

def _write(path: Path, sd) -> Path:
    if path.suffix in (".pth", ".pt", ".ckpt"):
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    return path


def _file(e, name: str, data: bytes) -> Path:
    p = e.tmp / name
    p.write_bytes(data)
    return p


def _truncated(e, name):
    p = _write(e.tmp / name, _sd("flux_2k"))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return load_decoder(p)


def _corrupt_header(e):
    p = _write(e.tmp / "pid.safetensors", _sd("flux_2k"))
    data = bytearray(p.read_bytes())
    data[8:20] = b"garbage-byte"
    p.write_bytes(bytes(data))
    return load_decoder(p)


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(e, zip_format: bool):
    marker = e.tmp / "pwned"
    path = e.tmp / "evil.pth"
    payload = {"net.y_pos_embedding": _Evil(marker)}
    if zip_format:
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    try:
        load_decoder(path)
    finally:
        assert not marker.exists(), "the pickle's code was executed"


def _quantised(kind):
    sd = _sd("flux_2k")
    if kind == "fp8":
        return {k: (v.to(torch.float8_e4m3fn) if v.dim() == 2 else v) for k, v in sd.items()}
    if kind == "int8_scaled":
        out = {k: (v.to(torch.int8) if v.dim() == 2 else v) for k, v in sd.items()}
        out["net.patch_blocks.0.mlp_x.w1.scale_weight"] = torch.ones(())
        return out
    out = dict(sd)  # bitsandbytes nf4: packed uint8 weight + absmax
    out["net.patch_blocks.0.mlp_x.w1.weight"] = torch.zeros(1360, dtype=torch.uint8)
    out["net.patch_blocks.0.mlp_x.w1.weight.absmax"] = torch.ones(85)
    return out


def _mixed(base: str, donor: str, part: str):
    sd, other = _sd(base), _sd(donor)
    for k in other:
        if part in k:
            sd[k] = other[k]
    return sd


def _without(key: str):
    sd = _sd("flux_2k")
    sd.pop(key)
    return sd


def _with(key: str, value):
    sd = _sd("flux_2k")
    sd[key] = value
    return sd


def _unknown_adapter():
    sd = _sd("flux_2k")
    sd["net.lq_proj.latent_proj.0.weight"] = torch.zeros(16, 7, 3, 3)
    return sd


GEMMA = {"model.embed_tokens.weight": torch.zeros(4, 4),
         "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}

FILE_CASES = [
    Case("missing_file", lambda e: load_decoder(e.tmp / "pid_flux_v1.5.safetensors"),
         "CheckpointReadError", (r"does not exist", r"Check the path and its spelling")),
    Case("empty_file", lambda e: load_decoder(_file(e, "pid.safetensors", b"")),
         "CheckpointReadError", (r"is empty \(0 bytes\)", r"did not finish", r"download it again")),
    Case("truncated_safetensors", lambda e: _truncated(e, "cut.safetensors"), "CheckpointReadError",
         (r"'cut\.safetensors'", r"truncated or corrupted", r"download it again")),
    Case("truncated_pth", lambda e: _truncated(e, "cut.pth"), "CheckpointReadError",
         (r"'cut\.pth' as a PyTorch checkpoint", r"truncated or corrupted", r"download it again")),
    Case("corrupted_header", _corrupt_header, "CheckpointReadError",
         (r"invalid JSON in header", r"truncated or corrupted")),
    Case("header_length_absurd", lambda e: load_decoder(_file(
        e, "big.safetensors", (10**12).to_bytes(8, "little") + b"\x00" * 64)), "CheckpointReadError",
         (r"header too large", r"download it again")),
    Case("three_byte_file", lambda e: load_decoder(_file(e, "x.safetensors", b"\x01\x02\x03")),
         "CheckpointReadError", (r"header too small", r"truncated or corrupted")),
    Case("zero_filled_pth", lambda e: load_decoder(_file(e, "zeros.pth", b"\x00" * 4096)),
         "CheckpointReadError", (r"neither a zip-format PyTorch checkpoint nor a plain pickle",
                                 r"download it again")),
    Case("folder_not_file", lambda e: load_decoder(e.tmp), "CheckpointReadError",
         (r"is a folder", r"\.safetensors or \.pth")),
    Case("unknown_extension", lambda e: load_decoder(_file(e, "pid.onnx", b"\x08\x01")),
         "CheckpointReadError", (r"extension '\.onnx'", r"expected one of \.bin, \.ckpt, \.pt, \.pth, "
                                 r"\.safetensors, \.sft")),
    Case("gguf_file", lambda e: load_decoder(_file(e, "pid-Q8_0.gguf", b"GGUF\x03\x00")),
         "CheckpointReadError", (r"GGUF", r"bf16 safetensors or the official model_ema_bf16\.pth")),
    Case("git_lfs_pointer", lambda e: load_decoder(_file(
        e, "model_ema_bf16.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:"
        b"0123abcd\nsize 2684354560\n")), "CheckpointReadError",
         (r"Git LFS pointer", r"git lfs pull", r"huggingface-cli download")),
    Case("html_error_page", lambda e: load_decoder(_file(
        e, "pid.safetensors", b"<!DOCTYPE html>\n<html><body>Access to model nvidia/PiD is "
        b"restricted. You must be authenticated.</body></html>")), "CheckpointReadError",
         (r"text file", r"<!DOCTYPE html>", r"web page", r"download the real file")),
    Case("json_error_body", lambda e: load_decoder(_file(
        e, "pid.pth", b'{"error":"Invalid username or password."}')), "CheckpointReadError",
         (r"text file", r"error", r"not logged in")),
    Case("vae_file", lambda e: load_decoder(_write(e.tmp / "ae.safetensors", {
        "encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
        "decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)})), "NotAPiDCheckpointError",
         (r"'ae\.safetensors' is a VAE", r"models/vae/", r"Use a PiD decoder file instead")),
    Case("flux_unet_file", lambda e: load_decoder(_write(e.tmp / "flux1-dev.safetensors", {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2)})),
         "NotAPiDCheckpointError", (r"FLUX diffusion model \(UNet\)", r"model_ema_bf16\.pth")),
    Case("sdxl_unet_file", lambda e: load_decoder({
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}),
         "NotAPiDCheckpointError", (r"SD/SDXL UNet",)),
    Case("sd3_file", lambda e: load_decoder({
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(2, 2)}),
         "NotAPiDCheckpointError", (r"SD3 diffusion model",)),
    Case("gemma_text_encoder_file", lambda e: load_decoder(GEMMA), "NotAPiDCheckpointError",
         (r"a text encoder", r"models/text_encoders/")),
    Case("lora_file", lambda e: load_decoder({
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(2, 2)}),
         "NotAPiDCheckpointError", (r"not a PiD decoder", r"lora_unet_double", r"net\.lq_proj")),
    Case("no_tensors", lambda e: load_decoder(_write(e.tmp / "empty.safetensors", {})),
         "NotAPiDCheckpointError", (r"holds no tensors", r"get the decoder file again")),
    Case("pickle_runs_code_zip", lambda e: _evil_pickle(e, True), "CheckpointReadError",
         (r"Refused to load 'evil\.pth'", r"posix\.system|GLOBAL", r"so it was not run",
          r"\.safetensors")),
    Case("pickle_runs_code_raw", lambda e: _evil_pickle(e, False), "CheckpointReadError",
         (r"Refused to load 'evil\.pth'", r"so it was not run")),
    Case("pickled_list", lambda e: load_decoder(_write(e.tmp / "list.pth", [torch.zeros(1)])),
         "CheckpointReadError", (r"holds a list", r"flat \{'net\.<key>': tensor\} dict")),
    Case("pickled_empty_dict", lambda e: load_decoder(_write(e.tmp / "e.pth", {})),
         "CheckpointReadError", (r"holds an empty dict", r"get the file again")),
    Case("training_checkpoint_with_extras", lambda e: load_decoder(_write(
        e.tmp / "train.pth", {"net.y_pos_embedding": torch.zeros(1), "epoch": 5})),
         "CheckpointReadError", (r"1 entries that are not tensors", r"'epoch'", r"model_ema_bf16")),
    Case("quantised_fp8", lambda e: load_decoder(_quantised("fp8")), "UnsupportedCheckpointError",
         (r"quantised PiD repack", r"float8_e4m3fn", r"bf16/fp16/fp32 decoders only",
          r"Use the bf16 safetensors")),
    Case("quantised_int8_scaled", lambda e: load_decoder(_quantised("int8_scaled")),
         "UnsupportedCheckpointError", (r"quantised", r"int8|scale_weight")),
    Case("quantised_nf4", lambda e: load_decoder(_quantised("nf4")), "UnsupportedCheckpointError",
         (r"quantised", r"uint8|absmax")),
    Case("v15_with_v1_gate_shapes", lambda e: load_decoder(
        _mixed("flux_v1.5", "flux_2k", "gate_modules")), "StateDictMismatchError",
         (r"detected 16ch v1\.5", r"wrongly shaped 4 weights", r"gate_modules\.0\.content_proj",
          r"mixes two variants", r"Download the decoder again")),
    Case("v1_with_v15_pit_gate", lambda e: load_decoder(_mixed("flux_2k", "flux_v1.5", "pit")),
         "StateDictMismatchError", (r"detected 16ch v1\.5", r"wrongly shaped", r"mixes two variants")),
    Case("v1_with_v15_gates", lambda e: load_decoder(_mixed("flux_2k", "flux_v1.5", "gate_modules")),
         "StateDictMismatchError", (r"is missing 5 weights", r"pit_head", r"mixes two variants")),
    Case("missing_one_weight", lambda e: load_decoder(_without("net.final_layer.norm.weight")),
         "StateDictMismatchError", (r"is missing 1 weight \(final_layer\.norm\.weight\)",
                                    r"Loading is strict", r"incomplete")),
    Case("extra_weight", lambda e: load_decoder(_with("net.extra.weight", torch.zeros(1))),
         "StateDictMismatchError", (r"unexpected 1 weight \(extra\.weight\)",)),
    Case("missing_detection_key", lambda e: load_decoder(_without("net.y_pos_embedding")),
         "StateDictMismatchError", (r"lacks y_pos_embedding", r"incomplete", r"Download it again")),
    Case("unknown_adapter_channels", lambda e: load_decoder(_unknown_adapter()),
         "NotAPiDCheckpointError", (r"takes 7 channels", r"known releases take 16 \(16ch v1\)",
                                    r"not supported")),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_checkpoint_files(case, env):
    _run_cases(case, env)


@pytest.mark.parametrize("release, wrong_name, said", [
    ("flux_v1.5", "pid_flux_2k.safetensors", "version v1"),
    ("flux_2k", "pid_flux_v1.5.safetensors", "version v1.5"),
    ("flux_2k", "pid_qwenimage_v1.5.safetensors", "version v1.5"),
    ("sdxl_2kto4k", "pid_flux_2kto4k.safetensors", "the 16ch family"),
    ("flux2_v1.5", "pid_sdxl_2kto4k.pth", "the sdxl family"),
])
def test_misnamed_file_loads_by_its_tensors_and_warns(env, release, wrong_name, said):
    """A v1.5 file picked under a v1 release name (or vice versa): the shapes decide, with a warning."""
    path = _write(env.tmp / wrong_name, _sd(release))
    with env.caplog.at_level(logging.WARNING, logger="pid_core.files.detect"):
        dec = load_decoder(path)
    ref = tiny_config(release)
    assert dec.net.cfg == ref
    assert dec.info.version == ("v1.5" if "v1.5" in release else "v1")
    text = " ".join(r.getMessage() for r in env.caplog.records)
    assert wrong_name in text and said in text and "using what the tensors say" in text
    assert "Rename the file" in text


def test_correctly_named_file_does_not_warn(env):
    path = _write(env.tmp / "pid_flux_v1.5.safetensors", _sd("flux_v1.5"))
    with env.caplog.at_level(logging.WARNING, logger="pid_core.files.detect"):
        load_decoder(path)
    assert not env.caplog.records


# --- prompts (pid_core.text.recipe, tiny SentencePiece tokenizer) --------------------------------------

BOS = 2
WORDS = "a cat dog red blue small city street lamp glass bus the of and in on with".split()


@pytest.fixture(scope="module")
def sp():
    spm = pytest.importorskip("sentencepiece")  # only the prompt cases need it
    rng = random.Random(0)
    lines = CHI_PREAMBLE.split("\n") + [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=200,
                                   model_type="bpe", pad_id=0, unk_id=1, bos_id=BOS, eos_id=3,
                                   character_coverage=1.0, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


class _SpEncoder:
    """TextEncoderLike on the tiny tokenizer; hidden states are an embedding lookup."""

    bos_id, pad_id = BOS, 0

    def __init__(self, sp, dim=T):
        self.sp = sp
        self.table = torch.randn(sp.vocab_size(), dim, generator=torch.Generator().manual_seed(0))

    def tokenize(self, text):
        return self.sp.encode(text)

    def hidden_states(self, ids, mask):
        return self.table[ids]


TEXT_CASES = [
    Case("captions_single_string", lambda e: build_token_batch("a cat", e.sp.encode, bos_id=BOS),
         "PiDInputError", (r"got a single str", r"Wrap it in a list")),
    Case("captions_empty_list", lambda e: build_token_batch([], e.sp.encode, bos_id=BOS),
         "PiDInputError", (r"non-empty list of strings", r"got \[\]", r"one prompt per latent")),
    Case("caption_none", lambda e: build_token_batch(["a cat", None], e.sp.encode, bos_id=BOS),
         "PiDInputError", (r"must all be str", r"caption 1 is a NoneType")),
    Case("tokenizer_adds_bos", lambda e: build_token_batch(
        ["a cat"], lambda t: [BOS] + e.sp.encode(t), bos_id=BOS), "TextEncodingError",
         (r"starting with BOS \(2\)", r"add_special_tokens=False")),
    Case("tokenizer_returns_strings", lambda e: build_token_batch(
        ["a cat"], lambda t: t.split(), bos_id=BOS), "TextEncodingError",
         (r"list of int token ids",)),
    Case("encoder_wrong_width", lambda e: encode_captions(["a cat"], _SpEncoder(e.sp, dim=2048)),
         "TextEncodingError", (r"2048-dim hidden states", r"PiD needs 2304", r"Gemma-2-2B")),
    Case("encoder_not_an_encoder", lambda e: encode_captions(["a cat"], object()), "TextEncodingError",
         (r"lacks tokenize, hidden_states, bos_id, pad_id", r"TransformersGemmaEncoder")),
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda c: c.id)
def test_prompts(case, env, sp):
    env.sp = sp
    _run_cases(case, env)


def test_empty_prompt_is_the_preamble_plus_padding(sp):
    """Accepted (upstream recipe): an empty prompt still conditions PiD on the CHI preamble."""
    enc = _SpEncoder(sp)
    batch = build_token_batch([""], sp.encode, bos_id=BOS)
    n = 1 + len(sp.encode(CHI_PREAMBLE))
    assert batch.input_ids[0, :n].tolist() == [BOS] + sp.encode(CHI_PREAMBLE)
    assert int(batch.attention_mask.sum()) == n and batch.input_ids[0, n:].eq(0).all()
    feats = encode_captions(["", "   "], enc)
    assert feats.shape == (2, 300, T) and torch.isfinite(feats).all()


def test_prompt_far_over_300_tokens_is_truncated_with_a_warning(sp, caplog):
    """Accepted (upstream truncates the same way): the tail is dropped, and the log says so."""
    long = " ".join(WORDS[i % len(WORDS)] for i in range(2000))
    assert len(sp.encode(long)) > 1000
    with caplog.at_level(logging.WARNING, logger="pid_core.text.recipe"):
        batch = build_token_batch(["a cat", long], sp.encode, bos_id=BOS)
    assert batch.input_ids.shape[1] == batch.n_chi + 298
    assert batch.attention_mask[1].all() and not batch.attention_mask[0].all()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1, msgs  # only the long prompt warns
    assert re.search(r"prompt 1 has \d{4} tokens; PiD reads at most 298 .* ignored\. Shorten", msgs[0])
    feats = encode_captions([long], _SpEncoder(sp))
    assert feats.shape == (1, 300, T)


# --- accepted inputs that look hostile ---------------------------------------------------------

def _sdxl_ve_conversion(e):
    from pid_core.decoding.latents import get_latent_format
    z = torch.randn(1, 4, 1, 1)
    zz, s = get_latent_format("sdxl").to_pid_frame(z, 14.6)
    assert torch.allclose(s, torch.tensor([14.6 / (14.6**2 + 1) ** 0.5]))
    assert torch.allclose(zz, z / (14.6**2 + 1) ** 0.5)
    return e.d.sdxl.decode(lat(1, 4, 1, 1) * 14.6, 14.6, txt(), steps=1)


Accepted = namedtuple("Accepted", "id run shape")
ACCEPTED = [
    Accepted("float64_latent", lambda e: flux(e, lat(1, 16, 1, 1, dtype=torch.float64)), (1, 3, 32, 32)),
    Accepted("float16_latent", lambda e: flux(e, lat(1, 16, 1, 1, dtype=torch.float16)), (1, 3, 32, 32)),
    Accepted("bfloat16_latent", lambda e: flux(e, lat(1, 16, 1, 1, dtype=torch.bfloat16)), (1, 3, 32, 32)),
    Accepted("sdxl_ve_sigma_14_6", _sdxl_ve_conversion, (1, 3, 32, 32)),
    Accepted("flow_sigma_exactly_1", lambda e: flux(e, lat(1, 16, 1, 1), 1.0), (1, 3, 32, 32)),
    Accepted("seed_max", lambda e: flux(e, lat(1, 16, 1, 1), seed=2**64 - 1), (1, 3, 32, 32)),
    Accepted("qwen_5d_single_frame", lambda e: e.d.v15.decode(lat(1, 16, 1, 1, 2), 0, txt(),
                                                              latent_format="qwenimage", steps=1),
             (1, 3, 32, 64)),
    Accepted("non_contiguous_latent", lambda e: flux(e, lat(1, 16, 2, 1).transpose(-1, -2)),
             (1, 3, 32, 64)),
    Accepted("one_prompt_for_batch_2", lambda e: flux(e, lat(2, 16, 1, 1), text=txt(1)), (2, 3, 32, 32)),
    Accepted("short_text_features", lambda e: flux(e, lat(1, 16, 1, 1), text=txt(tokens=1)),
             (1, 3, 32, 32)),
    Accepted("inside_envelope", lambda e: with_envelope(e.d.v1, (32, 64)).decode(
        lat(1, 16, 1, 2), 0, txt(), latent_format="flux", steps=1), (1, 3, 32, 64)),
    Accepted("aspect_snap_within_tolerance", lambda e: flux(e, lat(1, 16, 3, 2), output_size=(96, 80)),
             (1, 3, 96, 80)),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_accepted_inputs(case, env):
    out = case.run(env)
    assert tuple(out.shape) == case.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


# --- download failures: tests/test_download.py (a local fake hub: gated, 404, offline, disk full,
# digest mismatch, cut-off transfer, ...; each case asserts no partial file is left) -------------

# --- the nodes' public functions ----------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    from node_helpers import TinyTextEncoder, load_pack, pack_module
    pack = load_pack()
    model_folders = pack_module("nodes.model_folders")
    root = tmp_path_factory.mktemp("models")
    (root / "pid").mkdir()
    save_file(_sd("flux_v1.5"), str(root / "pid" / "pid_flux_v1.5.safetensors"))
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
               "decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(root / "pid" / "pid_ae.safetensors"))
    (root / "pid" / "pid_lfs.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    return types.SimpleNamespace(pack=pack, model_folders=model_folders, root=root, encoder=TinyTextEncoder,
                                 Load=pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"],
                                 Decode=pack.NODE_CLASS_MAPPINGS["PiD_DecodeLatent"])


def _node_load(n, e, name="pid_flux_v1.5.safetensors"):
    e.mp.setenv(n.model_folders.ENV_MODELS_DIR, str(n.root))
    return n.Load().load(name, "none", "auto", clip=n.encoder())[0]


def _node_decode(n, e, latent, sigma=0.0, **kw):
    model = _node_load(n, e)
    args = dict(prompt="a red fox", seed=0, steps=1, latent_format="flux", output_long_side=0)
    args.update(kw)
    return n.Decode().decode(model, latent if isinstance(latent, dict) else {"samples": latent},
                             sigma, **args)


NODE_CASES = [
    Case("node_vae_in_pid_folder", lambda n, e: _node_load(n, e, "pid_ae.safetensors"),
         "NotAPiDCheckpointError", (r"is a VAE", r"models/vae/")),
    Case("node_lfs_pointer_in_pid_folder", lambda n, e: _node_load(n, e, "pid_lfs.safetensors"),
         "CheckpointReadError", (r"Git LFS pointer", r"git lfs pull")),
    Case("node_sdxl_latent_on_flux_ckpt", lambda n, e: _node_decode(n, e, lat(1, 4, 2, 2)),
         "LatentMismatchError", (r"expects 16-channel", r"4 channels", r"SDXL")),
    Case("node_auto_4ch_latent_on_16ch_ckpt", lambda n, e: _node_decode(
        n, e, lat(1, 4, 2, 2), latent_format="auto"), "LatentMismatchError",
         (r"expects 16-channel latents", r"has 4 channels", r"looks like a SDXL latent")),
    Case("node_auto_format_16ch_without_model", lambda n, e: _node_decode(
        n, e, lat(1, 16, 2, 2), latent_format="auto"), "LatentMismatchError",
         (r"auto", r"Connect the LDM's MODEL", r"latent_format explicitly")),
    Case("node_sigma_above_1", lambda n, e: _node_decode(n, e, lat(1, 16, 2, 2), 14.6),
         "PiDInputError", (r"above 1", r"'flux'")),
    Case("node_nan_latent", lambda n, e: _node_decode(n, e, lat(1, 16, 2, 2, fill=float("nan"))),
         "PiDInputError", (r"NaN or infinite",)),
    Case("node_long_side_not_multiple", lambda n, e: _node_decode(
        n, e, lat(1, 16, 2, 2), output_long_side=8), "PiDInputError", (r"long side 8 px", r"16-px")),
]


@pytest.mark.parametrize("case", NODE_CASES, ids=lambda c: c.id)
def test_node_functions(case, env, nodes):
    with pytest.raises(Exception) as info:
        case.run(nodes, env)
    _assert_error(case, info.value)


# --- faults: out of memory on the whole-image path ----------------------------
#
# Needed behaviour (decode with tile=None, i.e. automatic): try the whole image; on
# torch.OutOfMemoryError log a WARNING naming the size and the tile it retries with, free the
# cache, and decode tiled, halving the tile on further OOMs; when even the smallest tile does not
# fit, raise PiDOutOfMemoryError saying how much memory was needed and how much was free. The fake
# OOM below fires inside the network (a pre-hook on the patch embedder) whenever more than
# OOM_TOKENS patch tokens are processed at once, whatever entry point the tiled path uses.

OOM_TOKENS = 16  # 64x64 px at patch 16


def _fake_oom(net, limit):
    calls = []

    def hook(module, args):
        tokens = args[0].shape[1]
        calls.append(tokens)
        if limit is None or tokens > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {tokens} GiB (fake)")

    return net.s_embedder.register_forward_pre_hook(hook), calls


def test_oom_whole_image_retries_tiled(caplog):
    dec = load_decoder(_sd("flux_v1.5"), dtype="fp32")
    handle, calls = _fake_oom(dec.net, OOM_TOKENS)
    try:
        with caplog.at_level(logging.WARNING):
            img = dec.decode(lat(1, 16, 4, 4), 0.0, txt(), latent_format="flux", steps=2)
    finally:
        handle.remove()
    assert img.shape == (1, 3, 128, 128) and 0 <= img.min() and img.max() <= 1
    assert max(calls) > OOM_TOKENS and calls[-1] <= OOM_TOKENS  # whole tried first, then tiles
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert re.search(r"out of memory", logged, re.I) and re.search(r"til", logged), logged


def test_oom_even_at_the_smallest_tile_says_how_much_was_needed():
    dec = load_decoder(_sd("flux_v1.5"), dtype="fp32")
    handle, _ = _fake_oom(dec.net, None)
    try:
        with pytest.raises(Exception) as info:
            dec.decode(lat(1, 16, 4, 4), 0.0, txt(), latent_format="flux", steps=2)
    finally:
        handle.remove()
    _assert_error(Case("oom_smallest_tile", None, "PiDOutOfMemoryError",
                       (r"smallest tile", r"\d+(\.\d+)? ?[MG]i?B", r"needed|needs")), info.value)
    assert isinstance(info.value, MemoryError)


# --- every message is documented in the README's troubleshooting section ---------------------------

ROOT = Path(__file__).resolve().parents[1]
_PID_ERRORS = {"PiDError", "CheckpointError", "CheckpointReadError", "NotAPiDCheckpointError",
               "UnsupportedCheckpointError", "StateDictMismatchError", "PiDInputError",
               "LatentMismatchError", "TextEncodingError", "DownloadError", "PiDOutOfMemoryError",
               "NonFiniteOutputError"}
_INTERNAL = ("sample() needs next_noise", "to_pid_frame expects a 4-D latent")


def _raised_messages():
    """(file:line, opening words of the message) for every ``raise <PiDError>(...)``."""
    import ast

    def chunks(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            out, cur = [], ""
            for v in node.values:
                if isinstance(v, ast.Constant):
                    cur += v.value
                else:
                    out.append(cur)
                    cur = ""
            return out + [cur]
        if isinstance(node, ast.BinOp):
            return chunks(node.left) + chunks(node.right)
        return []

    for path in sorted((ROOT / "pid_core").glob("*.py")) + sorted((ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                continue
            name = ast.unparse(node.exc.func).split(".")[-1]
            if name not in _PID_ERRORS:
                continue
            runs = [" ".join(c.split()).strip(" ;:,.()'\"") for c in chunks(node.exc.args[0])]
            opening = next((r for r in runs if len(r) >= 12), max(runs, key=len))[:30].strip()
            if opening and not any(opening.startswith(s) or s.startswith(opening) for s in _INTERNAL):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", opening


def test_every_message_is_documented():
    doc = " ".join((ROOT / "README.md").read_text().split())
    missing = [f"{where}: {text!r}" for where, text in _raised_messages() if text not in doc]
    assert not missing, ("these error messages are not listed in the README's Troubleshooting section "
                         "(add a row with the message and its fix):\n" + "\n".join(missing))
