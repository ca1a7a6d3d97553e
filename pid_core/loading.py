"""Build a PiD network for a checkpoint and load it strictly.

Steps: read the file (``checkpoint_io``) -> strip the key prefix and fuse ComfyUI's split adaLN
(``detect``) -> refuse quantised or non-PiD files -> detect the variant from shapes -> build the net
on the meta device -> compare keys and shapes exactly (missing/unexpected/mismatched keys raise
``StateDictMismatchError``) -> assign the tensors in the compute dtype.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint_io import read_state_dict
from .detect import Detection, check_is_pid, check_not_quantised, detect, fuse_split_adaln, strip_prefix
from .errors import PiDInputError, StateDictMismatchError
from .model import PiDNet

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


@dataclass(frozen=True)
class LoadedNet:
    net: PiDNet
    detection: Detection
    source_dtype: torch.dtype
    layout: str           # e.g. "prefix 'net.', fused adaLN"
    param_count: int


def bf16_supported(device) -> bool:
    """Whether ``device`` runs bf16 matmuls natively (CUDA compute capability 8+, XPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available() and torch.xpu.is_bf16_supported()
    return False


def resolve_dtype(dtype, device, bf16_ok: bool | None = None) -> torch.dtype:
    """The pack's one dtype policy: ``"auto"`` -> bf16 on an accelerator that supports it
    (``bf16_ok``, default ``bf16_supported(device)``: the host may know better, e.g. ComfyUI's
    ``should_use_bf16``), else fp32. fp16 only when asked: the released weights are bf16 and
    the residual stream of a 1.3B DiT can overflow fp16."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise PiDInputError(f"compute dtype {dtype} is not supported; use bf16, fp16 or fp32.")
        return dtype
    key = str(dtype or "auto").lower()
    if key == "auto":
        dev = torch.device(device)
        ok = bf16_supported(dev) if bf16_ok is None else bf16_ok
        return torch.bfloat16 if dev.type != "cpu" and ok else torch.float32
    if key not in DTYPES:
        raise PiDInputError(f"compute dtype '{dtype}' is unknown; expected auto, bf16, fp16 or fp32.")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def prepare_state_dict(sd: Mapping[str, torch.Tensor], name: str) -> tuple[dict, str]:
    """Normalise a raw checkpoint dict to upstream key names; returns (dict, layout description)."""
    sd, prefix = strip_prefix(dict(sd))
    check_not_quantised(sd, name)
    sd, was_split = fuse_split_adaln(sd)
    check_is_pid(sd, name)
    layout = f"prefix '{prefix}'" if prefix else "no prefix"
    return sd, layout + (", split adaLN (ComfyUI)" if was_split else ", fused adaLN")


def _strict_check(net: nn.Module, sd: Mapping[str, torch.Tensor], name: str, det: Detection) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
                  for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if not (missing or unexpected or mismatched):
        return
    what = f"{det.family} {det.version}"
    parts = []
    for label, keys in (("is missing", missing), ("has unexpected", unexpected),
                        ("has wrongly shaped", mismatched)):
        if keys:
            more = f", ... +{len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label} {len(keys)} weight{'s' * (len(keys) != 1)} ({', '.join(keys[:3])}{more})")
    raise StateDictMismatchError(
        f"PiD checkpoint '{name}' (detected {what}) {'; '.join(parts)}. Loading is strict: the file "
        f"is incomplete, modified, or mixes two variants. Download the decoder again.",
        missing=missing, unexpected=unexpected, mismatched=mismatched)


def inspect_state_dict(raw: Mapping[str, torch.Tensor], name: str = "state dict",
                       name_hint: str = "") -> tuple[dict, Detection, str]:
    """Normalise, detect and strictly check a state dict without materialising a network.

    Works on meta-device tensors. Returns (normalised dict, detection, layout description).
    """
    sd, layout = prepare_state_dict(raw, name)
    det = detect(sd, name, name_hint)
    with torch.device("meta"):
        reference = PiDNet(det.config)
    _strict_check(reference, sd, name, det)
    return sd, det, layout


def load_net(source: str | os.PathLike | Mapping[str, torch.Tensor], *, device="cpu", dtype="auto",
             name_hint: str | None = None, operations=nn) -> LoadedNet:
    """Read/normalise/detect/build/load. ``source`` is a path or an in-memory state dict."""
    if isinstance(source, Mapping):
        name = name_hint or "state dict"
        raw = source
    else:
        name = Path(source).name
        name_hint = name_hint or name
        raw = read_state_dict(source)
    sd, det, layout = inspect_state_dict(raw, name, name_hint or "")
    compute = resolve_dtype(dtype, device)
    src_dtype = next((v.dtype for v in sd.values() if v.is_floating_point()), torch.float32)
    with torch.device("meta"):
        net = PiDNet(det.config, dtype=compute, operations=operations)
    dev = torch.device(device)
    converted = {k: v.to(device=dev, dtype=compute) for k, v in sd.items()}
    net.load_state_dict(converted, strict=True, assign=True)
    net.eval().requires_grad_(False)
    n = sum(p.numel() for p in net.parameters())
    log.info("loaded PiD %s %s (%s, %.0fM params) from %s as %s on %s", det.family, det.version,
             det.release or "custom dims", n / 1e6, name, compute, dev)
    return LoadedNet(net, det, src_dtype, layout, n)
