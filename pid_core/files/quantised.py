"""Quantised PiD repacks: recognise them, refuse them where they cannot run, check their keys.

Comfy-Org's ``*_int8_convrot`` / ``*_mxfp8`` repacks store each quantised Linear as a low-precision
``weight`` plus per-layer scales and a ``<layer>.comfy_quant`` marker (a JSON blob, ComfyUI
``comfy/ops.py`` ``_load_quantized_module``; the file-header form ``_quantization_metadata`` is
turned into the same markers by ``comfy/utils.py`` ``convert_old_quants``). Running them takes
layers that understand those tensors: inside ComfyUI >= 0.33, ``comfy.ops.mixed_precision_ops``
(the host passes them as ``operations`` with ``quantised=True``). Everywhere else the file is
refused with the name of the bf16 file to use instead.
"""

from __future__ import annotations

import json
import re

import torch

from ..errors import UnsupportedCheckpointError
from .model_files import known_file, repack_name

MARKER = "comfy_quant"
# Tensors a quantised Linear may carry next to its weight and bias (comfy/ops.py
# _load_quantized_module and MixedPrecisionOps.Linear.state_dict).
AUX_SUFFIXES = (MARKER, "weight_scale", "weight_scale_2", "input_scale", "pre_quant_scale",
                "weight_s_rel", "weight_s_channel", "weight_codebook")
# Other quantisation schemes' key words (bitsandbytes, GPTQ, older scaled-fp8 repacks).
_FOREIGN_MARKERS = ("scale_weight", "scale_input", ".absmax", "quant_state", ".qweight", ".scales",
                    "weight_global_scale")
_LOW_DTYPES = {torch.int8, torch.uint8, torch.int32} | {
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                                "float8_e8m0fnu") if hasattr(torch, n)}


def quantised_layers(sd) -> dict[str, str]:
    """``{layer: format}`` of every layer carrying a ``comfy_quant`` marker."""
    out = {}
    for k, v in sd.items():
        if k.endswith("." + MARKER):
            layer = k[: -len(MARKER) - 1]
            try:
                out[layer] = json.loads(bytes(v.to(torch.uint8).tolist()).decode("utf-8")).get("format", "?")
            except (ValueError, RuntimeError, NotImplementedError):   # meta tensors, damaged JSON
                out[layer] = "?"
    return out


def is_aux_key(key: str, layers) -> bool:
    """Whether ``key`` is a scale/marker tensor of one of the quantised ``layers``."""
    layer, _, suffix = key.rpartition(".")
    return layer in layers and suffix in AUX_SUFFIXES


def check_quantisation(sd, name: str, allowed: bool) -> dict[str, str]:
    """The quantised layers of a (prefix-stripped) state dict; refuses what cannot load.

    ``allowed``: the caller's layers run ``comfy_quant`` files (ComfyUI's mixed-precision ops).
    Any other quantisation (foreign markers, low-precision weights without markers) is refused.
    """
    layers = quantised_layers(sd)
    foreign = [k for k, v in sd.items() if any(m in k for m in _FOREIGN_MARKERS)
               or (v.dtype in _LOW_DTYPES and not is_aux_key(k, layers)
                   and k.rpartition(".")[0] not in layers)]
    if not layers and not foreign:
        return {}
    if allowed and not foreign:
        return layers
    alt = bf16_alternative(name)
    if foreign:
        k = foreign[0]
        raise UnsupportedCheckpointError(
            f"'{name}' is a quantised PiD repack ({len(foreign)} quantised tensors, e.g. {k} "
            f"[{str(sd[k].dtype).replace('torch.', '')}]) in a format this pack does not load: it "
            f"loads bf16/fp16/fp32 decoders only (and Comfy-Org's comfy_quant repacks inside "
            f"ComfyUI 0.33 or newer). Use {alt} instead (pick a lower compute dtype for less memory).")
    raise UnsupportedCheckpointError(
        f"'{name}' is a quantised PiD repack ({len(layers)} quantised layers, "
        f"{'/'.join(sorted(set(layers.values())))}, e.g. {sorted(layers)[0]}): it runs only inside "
        f"ComfyUI 0.33 or newer, through ComfyUI's own quantised-tensor layers, which this host "
        f"(an older ComfyUI, or pid_core without ComfyUI) does not have. Use {alt} instead (pick "
        f"a lower compute dtype for less memory).")


def bf16_alternative(name: str) -> str:
    """The bf16 file to use instead of quantised file ``name``."""
    entry = known_file(name)
    if entry is not None and entry.release is not None:
        try:
            return repack_name(entry.release)
        except KeyError:
            pass
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    twin = _QUANT_SUFFIX.sub(r"_bf16\2", base)
    if twin != base and known_file(twin) is not None:
        return twin
    return "the bf16 safetensors of the same decoder (or the official model_ema_bf16.pth)"


# the layout word of a Comfy-Org file name, before its extension
_QUANT_SUFFIX = re.compile(r"_(int8_convrot|mxfp8|nvfp4|fp8_scaled|fp8)(\.[a-z]+)$")
