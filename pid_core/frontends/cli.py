"""Command line: ``python -m pid_core info CHECKPOINT``, ``decode ...`` and ``decode-batch ...``.

Under ``torchrun`` (``distributed.init_from_env``), ``decode-batch`` spreads the items over the
processes and ``decode --tile-parallel`` spreads one image's tiles; rank 0 writes the summary.

This module is the program's user interface, so it writes its results to stdout; the library
modules only log.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from ..decoding.compile import COMPILE_CHOICES
from ..decoding.latents import FRAMES
from ..errors import PiDError, PiDInputError
from .cli_io import file_noise_frame, fix_hint, read_latent, read_text_embeds, write_png


def _info(args) -> int:
    from ..files.checkpoint_io import read_state_dict
    from ..files.loading import inspect_state_dict
    raw = read_state_dict(args.checkpoint)
    name = Path(args.checkpoint).name
    sd, det = inspect_state_dict(raw, name, name)
    cfg = det.config
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    print(f"file:       {args.checkpoint}")
    print(f"family:     {det.family} ({', '.join(det.latent_formats)} latents, {cfg.latent_channels} channels)")
    print(f"variant:    {det.version} {det.resolution}"
          + (f" (release {det.release})" if det.release else " (custom dims)"))
    print(f"parameters: {sum(v.numel() for v in sd.values()):,}")
    print(f"dtype:      {', '.join(dtypes)}")
    print(f"layout:     {det.layout}")
    print(f"output:     latent x {cfg.output_factor} (VAE x{cfg.latent_down}, SR x{cfg.sr_scale})")
    return 0


def _text(args, batch: int) -> torch.Tensor:
    if args.text_embeds:
        return read_text_embeds(args.text_embeds)
    from ..text.gemma_hf import TransformersGemmaEncoder
    from ..text.recipe import encode_captions
    if not args.text_encoder:
        raise PiDInputError("--prompt needs --text-encoder DIR (a Gemma-2-2B-it folder for transformers).")
    enc = TransformersGemmaEncoder(args.text_encoder, device=args.device)
    return encode_captions([args.prompt], enc)


def parse_tile(value):
    """``--tile``: None, "auto", "N" or "HxW" (other text is left for ``tile_request`` to refuse)."""
    if value is None or value.lower() == "none":
        return None
    h, sep, w = value.lower().partition("x")
    if h.isdigit() and (not sep or w.isdigit()):
        return (int(h), int(w)) if sep else int(h)
    return value


def _decode(args) -> int:
    from ..decoding.decoder import DecodeOptions, load_decoder
    from .batch import parse_size
    from .distributed import TileParallel, close, init_from_env, shared_plan
    world = init_from_env(args.device) if args.tile_parallel else None
    dec = load_decoder(args.checkpoint, device=world.device if world else args.device, dtype=args.dtype,
                       compile=COMPILE_CHOICES[args.compile])
    latent = read_latent(args.latent)
    text = _text(args, latent.shape[0])
    size, tile = parse_size(args.size), parse_tile(args.tile)
    if world is not None:
        plan = shared_plan(dec, latent.shape, world, size, tile or "auto", args.tile_overlap)
    else:
        plan = dec.plan(latent.shape, size, tile, args.tile_overlap)
    options = DecodeOptions(
        noise_frame=file_noise_frame(args.latent, dec, args.latent_format, args.noise_frame),
        parallel=TileParallel(world) if world is not None else None,
        callback=lambda i, n: logging.getLogger("pid_core").info("step %d/%d", i, n))
    img = dec.decode(latent, args.sigma, text, seed=args.seed, steps=args.steps,
                     latent_format=args.latent_format, plan=plan, options=options)
    if world is not None:
        close(world)
        if not world.is_main:
            return 0
    out = Path(args.output)
    made_with = {"checkpoint": Path(args.checkpoint).name, "latent": str(args.latent),
                 "prompt": args.prompt, "text_embeds": args.text_embeds, "sigma": args.sigma, "seed": args.seed,
                 "steps": args.steps, "size": [img.shape[-2], img.shape[-1]], "latent_format": args.latent_format,
                 "noise_frame": args.noise_frame, "dtype": str(dec.dtype).replace("torch.", ""), "tile": args.tile,
                 "command": "python -m pid_core " + shlex.join(args.argv)}
    for b in range(img.shape[0]):
        target = out if img.shape[0] == 1 else out.with_name(f"{out.stem}_{b}{out.suffix}")
        write_png(str(target), img[b].cpu(), {**made_with, "batch_index": b})
        print(f"wrote {target} ({img.shape[-1]}x{img.shape[-2]})")
    return 0


def _decode_batch(args) -> int:
    from ..decoding.decoder import load_decoder
    from .batch import read_manifest, scan_folder
    from .batch_run import TextFeatures, merge_reports, run_batch
    from .distributed import close, gather_to_rank0, init_from_env
    world = init_from_env(args.device)
    defaults = {"sigma": args.sigma, "seed": args.seed, "steps": args.steps, "size": args.size,
                "latent_format": args.latent_format, "noise_frame": args.noise_frame, "prompt": args.prompt,
                "text_embeds": str(Path(args.text_embeds).resolve()) if args.text_embeds else None}
    items = read_manifest(args.manifest, defaults) if args.manifest else scan_folder(args.input, defaults)
    dec = load_decoder(args.checkpoint, device=world.device, dtype=args.dtype,   # once
                       compile=COMPILE_CHOICES[args.compile])
    make_encoder = None
    if args.text_encoder:
        def make_encoder():
            from ..text.gemma_hf import TransformersGemmaEncoder
            return TransformersGemmaEncoder(args.text_encoder, device=str(world.device))
    settings = {"checkpoint": Path(args.checkpoint).name, "checkpoint_bytes": Path(args.checkpoint).stat().st_size,
                "dtype": str(dec.dtype), "tile": args.tile, "tile_overlap": args.tile_overlap}
    report = run_batch(dec, items, args.out, world=world, text=TextFeatures(make_encoder), settings=settings,
                       tile=parse_tile(args.tile), tile_overlap=args.tile_overlap,
                       progress=not args.no_progress)
    reports = gather_to_rank0(report, world)
    close(world)
    if not world.is_main:
        return 0
    total = merge_reports(reports)
    rate = len(total.decoded) / total.seconds if total.seconds > 0 else 0.0
    print(f"decode-batch: {len(items)} items on {world.size} process(es): {len(total.decoded)} images decoded, "
          f"{len(total.skipped)} already done, {len(total.failed)} failed in {total.seconds:.1f} s "
          f"({rate:.2f} images/s, {total.prompts_encoded} prompt(s) encoded) -> {args.out}")
    for row, name, reason in total.failed:
        print(f"  FAILED row {row} ({name}): {reason}")
    return 1 if total.failed else 0


BATCH_EPILOG = """manifest: one JSON object per line; relative paths are relative to the manifest's folder:
  {"latent": "a.latent", "prompt": "a red fox", "sigma": 0.3449, "seed": 1}
  {"latent": "b.safetensors", "text_embeds": "b_embeds.safetensors", "latent_format": "flux",
   "size": "2048x2048", "steps": 4, "output": "b_2k"}
keys: latent (required), prompt | text_embeds, sigma, latent_format, noise_frame, seed, steps, size,
output;
a key a row leaves out takes the value of the option of that name (--sigma, --seed, --prompt...).
--in DIR instead reads every .latent / .safetensors file of DIR with the prompt of the
same-named .txt file beside it.

outputs: DIR/<output>.png (<output>_<b>.png for a latent batch) and a done record
DIR/<output>.pid.json; a rerun skips items whose record matches (same files and settings).
Failed items are listed at the end; exit status 1 if any failed, 2 if the batch could not start.
many GPUs: torchrun --nproc-per-node N -m pid_core decode-batch ... (items shared round-robin;
every output is the same whatever N is)."""


def _add_common(p) -> None:
    p.add_argument("--checkpoint", required=True, help="PiD decoder file (.pth or .safetensors)")
    p.add_argument("--text-encoder", help="Gemma-2-2B-it folder (transformers) for prompts")
    p.add_argument("--latent-format", default=None, help="flux, sd3, sdxl, qwenimage, flux2, normalized")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--steps", type=int, default=4, help="network calls, 1..4 (default 4)")
    p.add_argument("--size", help="output HxW (multiples of 16); default latent x output factor")
    p.add_argument("--tile", help="'auto', N or HxW px tiles (default: whole image, tiles on out-of-memory)")
    p.add_argument("--tile-overlap", type=int, default=None, help="px shared by neighbouring tiles")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda (under torchrun: cuda:LOCAL_RANK) or cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", nargs="?", const="on", default="off", choices=list(COMPILE_CHOICES),
                   help="torch.compile the network (on = default mode; max-autotune = longer compile, faster "
                        "kernels); each output/tile size compiles once per run. Needs Triton on NVIDIA GPUs, a "
                        "C++ compiler on the CPU; without one PiD warns and runs uncompiled")
    p.add_argument("--noise-frame", choices=list(FRAMES), default=None,
                   help="how a noisy latent is parameterised: flow ((1-s) x0 + s eps, diffusers), "
                        "comfy_flow (x_t/(1-s), ComfyUI's flow samplers) or ve (x0 + s eps, SDXL). "
                        "Default: ComfyUI's convention for .latent files, else flow (ve for SDXL)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pid_core", description="PiD pixel diffusion decoder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="show what a checkpoint is")
    info.add_argument("checkpoint")
    dec = sub.add_parser("decode", help="decode a latent to a PNG")
    _add_common(dec)
    dec.add_argument("--latent", required=True, help=".latent (ComfyUI) or .safetensors file")
    dec.add_argument("--sigma", type=float, required=True, help="noise level of the latent (0 = finished)")
    txt = dec.add_mutually_exclusive_group(required=True)
    txt.add_argument("--text-embeds", help="safetensors with one [B,300,2304] tensor")
    txt.add_argument("--prompt", help="the prompt that made the latent (needs --text-encoder)")
    dec.add_argument("--tile-parallel", action="store_true",
                     help="under torchrun: spread the tiles over the processes (same image as one process)")
    dec.add_argument("-o", "--output", required=True)
    bat = sub.add_parser("decode-batch", help="decode many latents (resumable; torchrun for many GPUs)",
                         description="Decode every item of a manifest or folder to DIR, skipping finished "
                                     "ones; a bad item is reported and skipped.", epilog=BATCH_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    src = bat.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSON-lines file, one item per line (see below)")
    src.add_argument("--in", dest="input", metavar="DIR", help="folder of latents with <name>.txt prompts")
    bat.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    _add_common(bat)
    bat.add_argument("--sigma", type=float, default=0.0, help="sigma of items without one (default 0)")
    txt = bat.add_mutually_exclusive_group()
    txt.add_argument("--prompt", help="prompt of items without prompt or text_embeds")
    txt.add_argument("--text-embeds", help="text features of items without prompt or text_embeds")
    bat.add_argument("--no-progress", action="store_true", help="no progress bar / per-item log lines")
    return ap


def main(argv=None) -> int:
    rank = os.environ.get("RANK") if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else None
    logging.basicConfig(level=logging.INFO, format="%(message)s" if rank is None else f"[rank {rank}] %(message)s")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    run = {"info": _info, "decode": _decode, "decode-batch": _decode_batch}[args.cmd]
    try:
        return run(args)
    except PiDError as exc:
        print(f"error: {exc}{fix_hint(exc)}", file=sys.stderr)
        return 2
