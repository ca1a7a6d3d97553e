"""Random weights for stand-in model files, written straight to safetensors.

A stand-in is described by its key -> (shape, dtype) list, taken from ComfyUI's own module
classes built on the meta device, so the file has exactly the keys ComfyUI's loaders expect.
`write_random` fills every tensor with seeded random values and streams it to disk one tensor at
a time (a 7.7B-parameter text encoder never sits in memory whole). `quantize` marks Linear weights
for the fp8-scaled layout Comfy-Org ships (``scaled_fp8`` marker + per-layer ``scale_weight``),
which both ComfyUI 0.3.64 and 0.33 load without upcasting the weights in memory.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.float8_e4m3fn: "F8_E4M3", torch.uint8: "U8", torch.int64: "I64"}
FP8 = torch.float8_e4m3fn


class Spec:
    """One tensor to write: shape, stored dtype, how to fill it."""

    def __init__(self, shape, dtype, fill="auto", gain=1.0, value=None):
        self.shape, self.dtype, self.fill, self.gain, self.value = tuple(shape), dtype, fill, gain, value

    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


def specs_from_state_dict(state, dtype, prefix="", rename=None) -> dict:
    """key -> Spec for every tensor of a (meta) state dict; float tensors stored as `dtype`."""
    out = {}
    for key, t in state.items():
        name = rename(key) if rename else prefix + key
        if name is None:
            continue
        out[name] = Spec(t.shape, dtype if t.dtype.is_floating_point else t.dtype)
    return out


def linear_weight_keys(module: torch.nn.Module, prefix="") -> set:
    return {f"{prefix}{name}.weight" for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}


def quantize(specs: dict, keys) -> dict:
    """Store the given 2-D weights as fp8 with a per-tensor scale (old ComfyUI scaled-fp8 layout)."""
    out = dict(specs)
    for key in keys:
        if key in out and len(out[key].shape) == 2:
            out[key] = Spec(out[key].shape, FP8, fill="fp8")
            fan_in = out[key].shape[1]  # stored fp8 value x scale_weight ~ N(0, 1/fan_in)
            out[key[: -len("weight")] + "scale_weight"] = Spec((), torch.float32,
                                                               value=4.0 / 448.0 / fan_in ** 0.5)
    out["scaled_fp8"] = Spec((0,), FP8, fill="zeros")
    return out


def _generator(key: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def _kind(key: str, spec: Spec) -> str:
    if spec.fill != "auto":
        return spec.fill
    leaf = key.rsplit(".", 1)[-1]
    lower = key.lower()
    if leaf == "bias":
        return "zeros"
    if len(spec.shape) <= 1:
        if any(s in lower for s in ("norm", "ln_", ".ln", "layernorm", "scale")) or leaf in ("weight", "gamma"):
            return "ones"
        return "small"
    if any(s in lower for s in ("embed_tokens", "token_embedding", "shared.weight", "position_embedding",
                                "positional_embedding", "pos_embed", "embeddings.", "pad_token",
                                "relative_attention_bias")):
        return "small"
    return "fan_in"


def tensor_for(key: str, spec: Spec, seed: int) -> torch.Tensor:
    kind = _kind(key, spec)
    if spec.value is not None:  # a constant
        return torch.full(spec.shape, float(spec.value)).to(spec.dtype)
    if kind == "zeros":
        return torch.zeros(spec.shape, dtype=spec.dtype)
    if kind == "ones":
        return torch.ones(spec.shape, dtype=spec.dtype)
    g = _generator(key, seed)
    if kind == "fp8":  # N(0, 1) clipped at 4 sigma, mapped onto fp8's range (+-448)
        return (torch.randn(spec.shape, generator=g).clamp_(-4, 4) * (448.0 / 4.0)).to(FP8)
    if spec.dtype in (torch.int64, torch.uint8):
        return torch.zeros(spec.shape, dtype=spec.dtype)
    t = torch.randn(spec.shape, generator=g)
    if kind == "normal":  # explicit standard deviation
        t *= spec.gain
    elif kind == "small":
        t *= 0.02 * spec.gain
    else:
        fan_in = max(1, t[0].numel())
        t *= spec.gain / fan_in ** 0.5
    return t.to(spec.dtype)


def write_random(path: Path, specs: dict, seed: int = 0, extra: dict | None = None,
                 metadata: dict | None = None) -> int:
    """Write every Spec (plus `extra` real tensors) to `path`; returns the file size."""
    extra = dict(extra or {})
    entries, offset = {}, 0
    order = sorted(set(specs) | set(extra))
    for key in order:
        if key in extra:
            t = extra[key].contiguous()
            shape, dtype, nbytes = tuple(t.shape), t.dtype, t.numel() * t.element_size()
        else:
            shape, dtype, nbytes = specs[key].shape, specs[key].dtype, specs[key].nbytes()
        entries[key] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        entries["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for key in order:
            t = extra[key].contiguous() if key in extra else tensor_for(key, specs[key], seed)
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    tmp.rename(path)
    return path.stat().st_size


def read_header(path: Path) -> dict:
    """key -> shape of a safetensors file (header only)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def mismatch(path: Path, specs: dict) -> list:
    """Keys this ComfyUI's classes expect that the file lacks or has in another shape."""
    have = read_header(path)
    return [k for k, s in specs.items() if have.get(k) != s.shape]


def meta_module(build):
    """Call `build()` with every new tensor on the meta device."""
    with torch.device("meta"):
        return build()
