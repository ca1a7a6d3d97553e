"""What the command line reads, writes and says: latents and text features in, PNG images (with how
they were made) out, and the flag that fixes an error."""

from __future__ import annotations

import ctypes
import json
import re
from importlib import metadata
from pathlib import Path

import torch

from ..decoding.latents import COMFY_FORMATS, FRAMES, choose_format
from ..errors import PiDError, PiDInputError

COMFY_LATENT_MARKER = "latent_format_version_0"
LEGACY_LATENT_SCALE = 1.0 / 0.18215   # ComfyUI LoadLatent applies this to files without the marker
# PNG text chunk holding a decode's parameters (ComfyUI's SaveImage stores "prompt"/"workflow")
PNG_KEY = "pid"
DISTRIBUTION = "comfyui-pid"

# How to change each input an error names (``PiDError.input_name``) on this command line.
FLAGS = {
    "checkpoint": "--checkpoint PATH, a PiD decoder .safetensors or .pth; info takes the PATH itself",
    "latent_format": f"--latent-format {'|'.join((*COMFY_FORMATS, 'normalized'))}",
    "latent": "--latent FILE, a ComfyUI .latent or a safetensors latent",
    "sigma": "--sigma S, 0 for a finished latent",
    "noise_frame": f"--noise-frame {'|'.join(FRAMES)}",
    "seed": "--seed N",
    "steps": "--steps 1..4",
    "output_size": "--size HxW, multiples of 16",
    "tile": "--tile auto|N|HxW",
    "text": "--prompt TEXT with --text-encoder DIR, or --text-embeds FILE",
    "dtype": "--dtype bf16|fp32",
}


# The decode-batch manifest keys among those inputs.
ROW_KEYS = {"latent_format", "latent", "sigma", "noise_frame", "seed", "steps", "text"}


def fix_hint(exc: PiDError, row: bool = False) -> str:
    """`` (on the command line: --flag ...)`` for the input ``exc`` names, else ``""``; ``row``:
    a decode-batch row's failure, which may also be fixed in the row."""
    name = getattr(exc, "input_name", None) or ""
    flag = FLAGS.get(name)
    if not flag:
        return ""
    key = ("prompt/text_embeds" if name == "text" else name) if row and name in ROW_KEYS else None
    return f" (on the command line: {flag}" + (f"; in the row: \"{key}\")" if key else ")")


def pack_version() -> str:
    """The pack's version: pyproject.toml of this checkout, else the installed distribution's."""
    for folder in Path(__file__).resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            text = pyproject.read_text(encoding="utf-8")
            found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
            if found and re.search(rf'^name\s*=\s*"{DISTRIBUTION}"', text, re.M):
                return found.group(1)
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def read_latent(path: str) -> torch.Tensor:
    """A latent from a ComfyUI ``.latent`` file or a safetensors file holding one tensor."""
    from safetensors.torch import load_file
    p = Path(path)
    if not p.is_file():
        raise PiDInputError(f"latent file '{p}' does not exist.", input_name="latent")
    try:
        data = load_file(str(p))
    except Exception as exc:  # safetensors raises several types for a bad header
        raise PiDInputError(f"could not read latent file '{p.name}' as safetensors: {exc}",
                            input_name="latent") from exc
    if "latent_tensor" in data:   # ComfyUI SaveLatent format, same rule as its LoadLatent
        scale = 1.0 if COMFY_LATENT_MARKER in data else LEGACY_LATENT_SCALE
        return data["latent_tensor"].float() * scale
    tensors = {k: v for k, v in data.items() if v.dim() >= 4}
    for key in ("samples", "latent", "latents"):
        if key in tensors:
            return tensors[key].float()
    if len(tensors) == 1:
        return next(iter(tensors.values())).float()
    raise PiDInputError(f"'{p.name}' holds {sorted(data)}; expected one 4-D/5-D latent tensor "
                        f"(or a ComfyUI .latent with 'latent_tensor').", input_name="latent")


def file_noise_frame(path, decoder, latent_format=None, frame: str | None = None) -> str:
    """The noise frame of a latent read from ``path`` (``frame`` if given): a ComfyUI ``.latent``
    holds what ComfyUI's sampler returned (the format's ``comfy_frame``, e.g. x_t / (1 - s) for a
    flow model); other files upstream's convention (the format's ``frame``)."""
    if frame is not None:
        return frame
    fmt = choose_format(latent_format, decoder.info)
    return fmt.comfy_frame if str(path).lower().endswith(".latent") else fmt.frame


def read_text_embeds(path: str) -> torch.Tensor:
    from safetensors.torch import load_file
    data = load_file(path)
    tensors = [v for v in data.values() if v.dim() == 3]
    if len(tensors) != 1:
        raise PiDInputError(f"'{path}' must hold exactly one [B, 300, 2304] tensor; found {sorted(data)}.",
                            input_name="text")
    return tensors[0].float()


def write_png(path: str, image: torch.Tensor, made_with: dict | None = None) -> None:
    """Save ``[3, H, W]`` in [0, 1] as an 8-bit RGB PNG; ``made_with`` (the decode's parameters)
    goes into the text chunk ``pid`` as JSON, with the pack's version."""
    from PIL import Image, PngImagePlugin
    arr = image.detach().clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
    h, w, _ = arr.shape
    img = Image.frombytes("RGB", (w, h), ctypes.string_at(arr.data_ptr(), arr.numel()))
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps({"pack": "ComfyUI-PiD", "version": pack_version(), **(made_with or {})},
                                      default=str))
    img.save(path, format="PNG", pnginfo=info, compress_level=6)


def read_png_parameters(path: str) -> dict:
    """The parameters ``write_png`` stored in a PNG (empty when it has none)."""
    from PIL import Image
    with Image.open(path) as img:
        raw = img.text.get(PNG_KEY) if hasattr(img, "text") else None
    return json.loads(raw) if raw else {}
