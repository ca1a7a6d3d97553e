"""Build a PiD network for a checkpoint and load it strictly.

read the file (``checkpoint_io``) -> strip the key prefix and fuse ComfyUI's split adaLN
(``detect``) -> refuse quantised or non-PiD files -> detect the variant -> build the net on the meta
device -> compare keys and shapes exactly (``StateDictMismatchError``) -> assign the tensors in the
compute dtype. Also the pack's one dtype policy (``resolve_dtype``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import PiDInputError, StateDictMismatchError
from ..network.blocks import sdpa
from ..network.model import PiDNet
from .checkpoint_io import read_state_dict
from .detect import DecoderInfo, check_is_pid, detect, fuse_split_adaln, strip_prefix
from .quantised import MARKER, check_quantisation, is_aux_key, quantised_layers

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


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


def prepare_state_dict(sd: Mapping[str, torch.Tensor], name: str,
                       quantised: bool = False) -> tuple[dict, str, dict]:
    """Normalise a raw checkpoint dict to upstream key names.

    Returns (dict, layout description, ``{layer: format}`` of its quantised layers). Quantised
    files are refused unless ``quantised`` (the caller's layers load ``comfy_quant`` tensors).
    """
    sd, prefix = strip_prefix(dict(sd))
    layers = check_quantisation(sd, name, allowed=quantised)
    sd, was_split = fuse_split_adaln(sd)
    check_is_pid(sd, name)
    layout = f"prefix '{prefix}'" if prefix else "no prefix"
    layout += ", split adaLN (ComfyUI)" if was_split else ", fused adaLN"
    if layers:
        layout += f", {len(layers)} quantised layers ({'/'.join(sorted(set(layers.values())))})"
    return sd, layout, layers


def _strict_check(net: nn.Module, sd: Mapping[str, torch.Tensor], name: str, det: DecoderInfo,
                  quantised: dict | None = None) -> None:
    """Exact keys and shapes; a quantised layer may add its scale/marker tensors, and its weight
    (low-precision storage, possibly padded) must only be a matrix of a Linear of the net."""
    expected = net.state_dict()
    quantised = quantised or {}
    linears = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected and not is_aux_key(k, quantised)]
    unexpected += [f"{layer}.{MARKER} (not a Linear)" for layer in quantised if layer not in linears]

    def fits(k, want):
        if k.rpartition(".")[0] in quantised and k.endswith(".weight"):
            return sd[k].dim() == 2
        return sd[k].shape == want.shape

    mismatched = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
                  for k, v in expected.items() if k in sd and not fits(k, v)]
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
                       name_hint: str = "", quantised: bool = False) -> tuple[dict, DecoderInfo]:
    """Normalise, detect and strictly check a state dict without materialising a network.

    Works on meta-device tensors. Returns (normalised dict, what it is).
    ``quantised``: accept ``comfy_quant`` layers (see ``load_net``).
    """
    sd, layout, layers = prepare_state_dict(raw, name, quantised)
    det = detect(sd, name, name_hint)
    with torch.device("meta"):
        reference = PiDNet(det.config)
    _strict_check(reference, sd, name, det, layers)
    return sd, dataclasses.replace(det, layout=layout)


def load_net(source: str | os.PathLike | Mapping[str, torch.Tensor], *, device="cpu", dtype="auto",
             name_hint: str | None = None, operations=nn, quantised: bool = False,
             attention=sdpa) -> tuple[PiDNet, DecoderInfo]:
    """Read/normalise/detect/build/load. ``source`` is a path or an in-memory state dict.

    ``quantised=True``: ``operations`` provide Linear layers that load ComfyUI's ``comfy_quant``
    tensors themselves (``comfy.ops.mixed_precision_ops``); the net is then built on ``device``
    (those layers create their weights while loading) and quantised tensors keep their dtype.
    """
    if isinstance(source, Mapping):
        name = name_hint or "state dict"
        raw = source
    else:
        name = Path(source).name
        name_hint = name_hint or name
        raw = read_state_dict(source)
    sd, det = inspect_state_dict(raw, name, name_hint or "", quantised)
    compute = resolve_dtype(dtype, device)
    dev = torch.device(device)
    layers = quantised_layers(sd)
    src_dtype = next((v.dtype for k, v in sd.items() if v.is_floating_point()
                      and k.rpartition(".")[0] not in layers), torch.float32)
    if layers:
        net = PiDNet(det.config, dtype=compute, device=dev, operations=operations, attention=attention)
        net.load_state_dict({k: v if _keeps_dtype(k, layers) else v.to(device=dev, dtype=compute)
                             for k, v in sd.items()}, strict=True)
    else:
        with torch.device("meta"):
            net = PiDNet(det.config, dtype=compute, operations=operations, attention=attention)
        net.load_state_dict({k: v.to(device=dev, dtype=compute) for k, v in sd.items()},
                            strict=True, assign=True)
    net.eval().requires_grad_(False)
    log.info("loaded PiD %s %s (%s, %.0fM params) from %s as %s on %s", det.family, det.version,
             det.release or "custom dims", det.param_count / 1e6, name, compute, dev)
    return net, dataclasses.replace(det, source_dtype=str(src_dtype).replace("torch.", ""))


def _keeps_dtype(key: str, layers) -> bool:
    """A quantised layer's weight and its scale/marker tensors go to its layer as stored."""
    return is_aux_key(key, layers) or (key.rpartition(".")[0] in layers and key.endswith(".weight"))
