"""Quantised PiD repacks (Comfy-Org ``*_int8_convrot``, ``*_mxfp8``) through ComfyUI's own layers.

ComfyUI >= 0.33 runs quantised files for core's PiD with its mixed-precision operations
(``comfy/ops.py`` ``mixed_precision_ops``, ``comfy/quant_ops.py``). This module does the same
for our network: the file is read with ComfyUI's loader (``comfy.utils.load_torch_file`` and
``convert_old_quants``, which turns a header's ``_quantization_metadata`` into per-layer markers),
the layers ComfyUI cannot compute natively on the device run emulated (as ComfyUI's own
``pick_operations`` decides), and pid_core builds the net with those operations. Where the host
lacks them (ComfyUI < 0.33, no ComfyUI), ``pid_core`` refuses the file naming the bf16 one.
"""

from __future__ import annotations

import logging
import os

import torch

from ..pid_core.decoding.decoder import PiDDecoder, load_decoder
from ..pid_core.errors import UnsupportedCheckpointError
from ..pid_core.files.detect import strip_prefix
from ..pid_core.files.quantised import MARKER, bf16_alternative, quantised_layers
from . import host

log = logging.getLogger(__name__)

_HEADER_KEY = "_quantization_metadata"
# ComfyUI's device checks for formats it computes natively (comfy/ops.py pick_operations).
_NATIVE_CHECKS = {"mxfp8": "supports_mxfp8_compute", "nvfp4": "supports_nvfp4_compute",
                  "float8_e4m3fn": "supports_fp8_compute", "float8_e5m2": "supports_fp8_compute"}


def available() -> bool:
    """Whether the host has ComfyUI's quantised-tensor layers (ComfyUI >= 0.33)."""
    ops, quant = host._optional("comfy.ops"), host._optional("comfy.quant_ops")
    return ops is not None and quant is not None and hasattr(ops, "mixed_precision_ops")


def is_quantised_file(path: str) -> bool:
    """A safetensors file with ``comfy_quant`` markers or a quantisation header (header read only)."""
    if not path.lower().endswith((".safetensors", ".sft")) or not os.path.isfile(path):
        return False
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="pt") as f:
            return _HEADER_KEY in (f.metadata() or {}) or any(k.endswith("." + MARKER) for k in f.keys())
    except (SafetensorError, OSError):
        return False   # pid_core's reader says what is wrong with the file


def load_quantised_decoder(path: str, device, compute_dtype: torch.dtype, compile: str | None = None,
                           attention=None) -> PiDDecoder:
    """The decoder of a quantised file, built with ComfyUI's mixed-precision operations."""
    utils, mm = host._optional("comfy.utils"), host._optional("comfy.model_management")
    ops, quant = host._optional("comfy.ops"), host._optional("comfy.quant_ops")
    name = os.path.basename(path)
    raw, metadata = utils.load_torch_file(path, return_metadata=True)
    raw, _ = utils.convert_old_quants(raw, "", metadata)
    layers = quantised_layers(strip_prefix(raw)[0])
    formats = set(layers.values())
    unknown = sorted(f for f in formats if f not in quant.QUANT_ALGOS)
    if unknown:
        raise UnsupportedCheckpointError(
            f"'{name}' has layers quantised as {', '.join(unknown)}, which this ComfyUI's quantised "
            f"ops do not know ({', '.join(sorted(quant.QUANT_ALGOS))}). Update ComfyUI, or use "
            f"{bf16_alternative(name)} instead.")
    compute_device = mm.get_torch_device()
    _check_device(name, formats, compute_device)
    disabled = {f for f, check in _NATIVE_CHECKS.items() if not getattr(mm, check)(compute_device)}
    emulated = sorted(formats & disabled)
    if emulated:
        log.info("PiD %s: %s layers run emulated on %s (dequantised matmuls, as ComfyUI does)", name,
                 "/".join(emulated), compute_device)
    operations = ops.mixed_precision_ops({"mixed_ops": True}, compute_dtype, disabled=disabled)
    return load_decoder(raw, device=device, dtype=compute_dtype, name_hint=name, operations=operations,
                        quantised=True, compile=compile, **({"attention": attention} if attention else {}))


def _check_device(name: str, formats: set, device) -> None:
    """Refuse or warn for combinations other PiD integrations have reported broken."""
    dev = torch.device(device)
    if "int8_tensorwise" not in formats:
        return
    if dev.type == "mps":
        raise UnsupportedCheckpointError(
            f"'{name}' has int8 layers, which ComfyUI computes with CUDA/CPU kernels only: on Apple "
            f"MPS its int8 matmul is not implemented (comfy-kitchen issue #92). Use "
            f"{bf16_alternative(name)} instead.")
    cuda = torch.version.cuda
    if dev.type == "cuda" and torch.version.hip:
        log.warning("PiD %s: int8 layers on ROCm have been reported to give blank or blocky images "
                    "(and to hang RDNA1/2 GPUs); if the output looks wrong, use %s.", name,
                    bf16_alternative(name))
    elif dev.type == "cuda" and torch.cuda.get_device_capability(dev) < (8, 0) and cuda \
            and int(cuda.split(".")[0]) < 13:
        log.warning("PiD %s: int8 layers on a pre-Ampere GPU with CUDA %s have been reported to "
                    "give noise (ComfyUI's int8 kernels for 20-series cards need CUDA 13); if the "
                    "output looks wrong, use %s with dtype fp32.", name, cuda, bf16_alternative(name))
