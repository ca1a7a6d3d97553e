"""Command line: ``python -m pid_core info CHECKPOINT`` and ``python -m pid_core decode ...``.

This module is the program's user interface, so it writes its results to stdout; the library
modules only log.
"""

from __future__ import annotations

import argparse
import logging
import struct
import sys
import zlib
from pathlib import Path

import torch

from .errors import PiDError, PiDInputError

COMFY_LATENT_MARKER = "latent_format_version_0"
LEGACY_LATENT_SCALE = 1.0 / 0.18215   # ComfyUI LoadLatent applies this to files without the marker


def read_latent(path: str) -> torch.Tensor:
    """A latent from a ComfyUI ``.latent`` file or a safetensors file holding one tensor."""
    from safetensors.torch import load_file
    p = Path(path)
    if not p.is_file():
        raise PiDInputError(f"latent file '{p}' does not exist.")
    try:
        data = load_file(str(p))
    except Exception as exc:  # safetensors raises several types for a bad header
        raise PiDInputError(f"could not read latent file '{p.name}' as safetensors: {exc}") from exc
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
                        f"(or a ComfyUI .latent with 'latent_tensor').")


def read_text_embeds(path: str) -> torch.Tensor:
    from safetensors.torch import load_file
    data = load_file(path)
    tensors = [v for v in data.values() if v.dim() == 3]
    if len(tensors) != 1:
        raise PiDInputError(f"'{path}' must hold exactly one [B, 300, 2304] tensor; found {sorted(data)}.")
    return tensors[0].float()


def write_png(path: str, image: torch.Tensor) -> None:
    """Save ``[3, H, W]`` in [0, 1] as an 8-bit RGB PNG (stdlib only)."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + bytes(arr[row].flatten().tolist()) for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


def _info(args) -> int:
    from .checkpoint_io import read_state_dict
    from .loading import inspect_state_dict
    raw = read_state_dict(args.checkpoint)
    name = Path(args.checkpoint).name
    sd, det, layout = inspect_state_dict(raw, name, name)
    cfg = det.config
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    print(f"file:       {args.checkpoint}")
    print(f"family:     {det.family} ({', '.join(det.latent_formats)} latents, {cfg.latent_channels} channels)")
    print(f"variant:    {det.version} {det.resolution}"
          + (f" (release {det.release})" if det.release else " (custom dims)"))
    print(f"parameters: {sum(v.numel() for v in sd.values()):,}")
    print(f"dtype:      {', '.join(dtypes)}")
    print(f"layout:     {layout}")
    print(f"output:     latent x {cfg.output_factor} (VAE x{cfg.latent_down}, SR x{cfg.sr_scale})")
    return 0


def _text(args, batch: int) -> torch.Tensor:
    if args.text_embeds:
        return read_text_embeds(args.text_embeds)
    from .gemma_hf import TransformersGemmaEncoder
    from .text import encode_captions
    if not args.text_encoder:
        raise PiDInputError("--prompt needs --text-encoder DIR (a Gemma-2-2B-it folder for transformers).")
    enc = TransformersGemmaEncoder(args.text_encoder, device=args.device)
    return encode_captions([args.prompt], enc)


def _decode(args) -> int:
    from .decoder import load_decoder
    dec = load_decoder(args.checkpoint, device=args.device, dtype=args.dtype)
    latent = read_latent(args.latent)
    text = _text(args, latent.shape[0])
    size = None
    if args.size:
        h, _, w = args.size.lower().partition("x")
        size = (int(h), int(w))
    img = dec.decode(latent, args.sigma, text, seed=args.seed, steps=args.steps,
                     latent_format=args.latent_format, output_size=size,
                     callback=lambda i, n: logging.getLogger("pid_core").info("step %d/%d", i, n))
    out = Path(args.output)
    for b in range(img.shape[0]):
        target = out if img.shape[0] == 1 else out.with_name(f"{out.stem}_{b}{out.suffix}")
        write_png(str(target), img[b].cpu())
        print(f"wrote {target} ({img.shape[-1]}x{img.shape[-2]})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pid_core", description="PiD pixel diffusion decoder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="show what a checkpoint is")
    info.add_argument("checkpoint")
    dec = sub.add_parser("decode", help="decode a latent to a PNG")
    dec.add_argument("--checkpoint", required=True)
    dec.add_argument("--latent", required=True, help=".latent (ComfyUI) or .safetensors file")
    dec.add_argument("--sigma", type=float, required=True, help="noise level of the latent (0 = finished)")
    txt = dec.add_mutually_exclusive_group(required=True)
    txt.add_argument("--text-embeds", help="safetensors with one [B,300,2304] tensor")
    txt.add_argument("--prompt", help="the prompt that made the latent (needs --text-encoder)")
    dec.add_argument("--text-encoder", help="Gemma-2-2B-it folder (transformers) for --prompt")
    dec.add_argument("--latent-format", default=None, help="flux, sd3, sdxl, qwenimage, flux2, normalized")
    dec.add_argument("--seed", type=int, default=0)
    dec.add_argument("--steps", type=int, default=4)
    dec.add_argument("--size", help="output HxW (multiples of 16); default latent x output factor")
    dec.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dec.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    dec.add_argument("-o", "--output", required=True)
    return ap


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return _info(args) if args.cmd == "info" else _decode(args)
    except PiDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
