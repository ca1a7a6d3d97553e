"""Read a decoder file into a flat ``{key: tensor}`` dict, safely.

``.pth``/``.pt`` files are read only with ``torch.load(weights_only=True)`` (a pickle that would run
code is refused, not executed); ``.safetensors``/``.sft`` through safetensors. Nothing here knows
about PiD key names: see ``detect.py``.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointReadError

log = logging.getLogger(__name__)

SAFETENSORS_EXT = {".safetensors", ".sft"}
PICKLE_EXT = {".pth", ".pt", ".ckpt", ".bin"}
SUPPORTED_EXT = SAFETENSORS_EXT | PICKLE_EXT
_WRAPPER_KEYS = ("state_dict", "model", "module")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load every tensor of ``path`` on the CPU. Raises ``CheckpointReadError`` with a fix."""
    p = Path(path)
    if not p.exists():
        raise CheckpointReadError(
            f"PiD checkpoint '{p}' does not exist. Check the path and its spelling.")
    if p.is_dir():
        raise CheckpointReadError(f"'{p}' is a folder; expected a .safetensors or .pth decoder file.")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointReadError(
            f"PiD checkpoint '{p.name}' is empty (0 bytes): the download or copy did not finish. "
            f"Delete it and download it again.")
    ext = p.suffix.lower()
    if ext in SUPPORTED_EXT:
        _refuse_text_file(p, size)
    if ext in SAFETENSORS_EXT:
        sd = _read_safetensors(p)
    elif ext in PICKLE_EXT:
        sd = _read_pickle(p)
    elif ext == ".gguf":
        raise CheckpointReadError(
            f"'{p.name}' is a GGUF file; PiD decoders are read from .safetensors or .pth. "
            f"Use the bf16 safetensors or the official model_ema_bf16.pth.")
    else:
        raise CheckpointReadError(
            f"'{p.name}' has the extension '{ext or '(none)'}'; expected one of "
            f"{', '.join(sorted(SUPPORTED_EXT))}.")
    log.info("read %d tensors from %s (%.1f MB)", len(sd), p.name, size / 2**20)
    return sd


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointReadError(
            f"Could not read '{p.name}' as safetensors ({type(exc).__name__}: {exc}). The file is "
            f"truncated or corrupted (its header is unreadable); download it again.") from exc


def _read_pickle(p: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            obj = torch.load(str(p), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        raise CheckpointReadError(
            f"Refused to load '{p.name}': it is a pickle that contains more than tensors "
            f"(torch.load(weights_only=True) rejected it: {_pickle_detail(exc)}). PiD never "
            f"executes code from a checkpoint, so it was not run. Use the official "
            f"model_ema_bf16.pth or a .safetensors file from a source you trust.") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointReadError(
            f"Could not read '{p.name}' as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{_torch_detail(exc)}). The file is truncated or corrupted; download it again.") from exc
    return _unwrap(obj, p.name)


_LFS_MAGIC = b"version https://git-lfs"
_TEXT_STARTS = (b"<", b"{", b"[", b"#", b"Entry not found", b"Access", b"Invalid", b"error", b"Error")


def _refuse_text_file(p: Path, size: int) -> None:
    """Say what a small text file saved under a weights name really is (LFS pointer, web page)."""
    with open(p, "rb") as f:
        head = f.read(256)
    if head.startswith(_LFS_MAGIC):
        raise CheckpointReadError(
            f"'{p.name}' is a Git LFS pointer ({size} bytes of text), not the weights: the repository "
            f"was cloned without git-lfs. Run `git lfs pull` in that clone, or download the file "
            f"itself from huggingface.co (the download button, or `huggingface-cli download`).")
    if size < 2**20 and head.lstrip().startswith(_TEXT_STARTS) and _is_text(head):
        first = head.lstrip().split(b"\n", 1)[0][:60].decode("utf-8", "replace")
        raise CheckpointReadError(
            f"'{p.name}' is a {size}-byte text file (it starts with {first!r}), not model weights: "
            f"the download saved a web page or an error message (not logged in, licence not "
            f"accepted, or a wrong link). Delete it and download the real file (several GB) again.")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in (9, 10, 13) for c in head)


def _pickle_detail(exc: Exception) -> str:
    """The informative line of torch's weights_only refusal, without its advice to disable it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ("GLOBAL" in ln or "Unsupported" in ln) and "weights_only" not in ln:
            return ln[:200]
    return "it holds objects other than tensors"


def _torch_detail(exc: Exception) -> str:
    text = str(exc).strip()
    if "legacy .tar format" in text:
        return "it is neither a zip-format PyTorch checkpoint nor a plain pickle"
    first = text.splitlines()[0] if text else ""
    return first.split(" In PyTorch 2.6")[0][:200]


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    for key in _WRAPPER_KEYS:  # {"state_dict": {...}} style exports
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, dict) and not obj:
        raise CheckpointReadError(
            f"'{name}' holds an empty dict (no tensors); expected the flat {{'net.<key>': tensor}} "
            f"dict of the official PiD release. The export or download failed; get the file again.")
    if not isinstance(obj, dict):
        raise CheckpointReadError(
            f"'{name}' holds a {type(obj).__name__}, not a dict of tensors; expected the flat "
            f"{{'net.<key>': tensor}} dict of the official PiD release.")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointReadError(
            f"'{name}' has {len(bad)} entries that are not tensors (e.g. {bad[0]!r}); expected a "
            f"flat dict of tensors such as model_ema_bf16.pth.")
    return obj
