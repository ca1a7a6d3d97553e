"""Stand-in model files for running every shipped workflow in a real, CPU-only ComfyUI.

    H=~/.cache/comfy_host_v033
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/host_fixtures.py OUT_DIR [--workflows DIR]

Reads the model and input file names from the loader nodes of every workflow in ``workflows/``
(``standins/needs.py`` decides from the graph what each file must be) and gives OUT_DIR a ComfyUI
``models/`` layout plus ``input/``, with symlinks into a cache (``$PID_HOST_MODELS``, default
``~/.cache/pid_host_models``), where each file is built once and kept under a name keyed by a hash
of the builder code and what it stands for:

* diffusion models and checkpoints: tiny random models of the right family (standins/ldm.py),
  built from ComfyUI's own classes and re-detected by ComfyUI's own model detection;
* text encoders: full size (ComfyUI builds them at fixed sizes), random, fp8-scaled where large
  (standins/encoders.py);
* VAEs: full size random (ComfyUI's VAE encoder has a fixed width);
* PiD decoders: tiny random PiD nets (pid_core.network.random_weights), written fresh each time;
* Gemma-2-2B: the full-size random one of tools/text_equivalence.py (weights + trained
  SentencePiece tokenizer);
* inputs: an example PNG and a ``.latent`` of the PiD checkpoint's latent shape.

Writes OUT_DIR/manifest.json: every file, and per workflow the reason it cannot run on this
ComfyUI (a family this version cannot load), if any.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PID_HOST_MODELS", Path.home() / ".cache" / "pid_host_models"))


def _pack_module(name: str):
    pkg = "comfyui_pid_fixtures"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(pkg, ROOT / "pid_core" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "pid_core")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{pkg}.{name}")


BUILDER_SOURCES = {"unet": ("weights.py", "ldm.py"), "vae": ("weights.py", "ldm.py"),
                   "checkpoint": ("weights.py", "ldm.py", "encoders.py"), "text_encoder": ("weights.py", "encoders.py")}


def _code_only(path: Path) -> bytes:
    """The module's syntax tree without docstrings (comments and layout never count), so only an
    edit of the code itself gives a new cache key."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _builder_hash(kind: str, what: str) -> str:
    """Cache key: what the file stands for and the code that writes it."""
    h = hashlib.sha256(f"{kind}:{what}".encode())
    for name in BUILDER_SOURCES[kind]:
        h.update(_code_only(TOOLS / "standins" / name))
    return h.hexdigest()[:12]


def _log(msg: str) -> None:
    print(f"[host_fixtures {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def standin_specs(kind: str, what: str) -> dict:
    """Key -> Spec of one stand-in, from this ComfyUI's own classes (meta tensors: seconds)."""
    from standins import encoders, ldm

    if kind == "unet":
        specs = ldm.unet_file_specs(what)
    elif kind == "checkpoint":
        clips = {"sdxl": "sdxl_clips", "sd3": "sd3_clips"}[what]
        vae = ldm.vae_specs(4, True) if what == "sdxl" else ldm.vae_specs(16, False)
        specs = ldm.checkpoint_specs(what, encoders.checkpoint_clip_state(clips), vae)
    elif kind == "text_encoder":
        specs = encoders.text_encoder_file_specs(what)
    elif kind == "vae":
        specs = ldm.vae_specs(4, True) if what == "sdxl" else ldm.vae_specs(16, False)
    else:
        raise ValueError(kind)
    if specs is None:
        raise LookupError(f"this ComfyUI has no {ldm.EXPECTED[what]} model class")
    return specs


def build_blob(kind: str, what: str, notes: list) -> Path:
    """The cached file for one stand-in, built on first use. A file built with another ComfyUI
    version's classes is reused; keys this version expects but the file lacks go to `notes`."""
    from standins.weights import mismatch, write_random

    specs = standin_specs(kind, what)
    blob = CACHE / "blobs" / f"{kind}-{what}-{_builder_hash(kind, what)}.safetensors"
    if blob.exists():
        missing = mismatch(blob, specs)
        if missing:
            notes.append(f"{blob.name}: {len(missing)} keys this ComfyUI expects are absent or shaped "
                         f"differently, e.g. {missing[:3]}")
        return blob
    t0 = time.time()
    size = write_random(blob, specs, seed=0, metadata={"stand_in": f"{kind}:{what}", "random": "yes"})
    _log(f"built {blob.name}: {len(specs)} tensors, {size / 1e9:.2f} GB in {time.time() - t0:.0f}s")
    return blob


def prune_stale(kept: set) -> None:
    """Delete cached files made by an older builder for the same stand-in (same kind and what)."""
    stems = {p.name.rsplit("-", 1)[0] for p in kept}
    for p in (CACHE / "blobs").glob("*.safetensors"):
        if p not in kept and p.name.rsplit("-", 1)[0] in stems:
            _log(f"removing stale {p.name}")
            p.unlink()


def gemma_blob() -> Path:
    import text_equivalence

    return text_equivalence.prepare_gemma(CACHE / "text_equiv", seed=0)


def write_pid(path: Path, release: str) -> None:
    rw = _pack_module("network.random_weights")
    save_file(rw.random_state_dict(rw.tiny_config(release), seed=0), str(path))


def write_image(path: Path) -> None:
    y, x = np.mgrid[0:192, 0:256]
    rgb = np.stack([x / 255.0, y / 191.0, 0.5 + 0.5 * np.sin(x / 9.0) * np.cos(y / 7.0)], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def write_latent(path: Path, fmt: str) -> None:
    from standins.needs import LATENT_BY_PID_FAMILY

    channels, down = LATENT_BY_PID_FAMILY[fmt]
    side = 256 // down
    latent = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(1))
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])}, str(path))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target.resolve(), link)


def main(argv=None) -> int:
    from standins.needs import all_needs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--workflows", type=Path, default=ROOT / "workflows")
    ap.add_argument("--only", nargs="*", help="workflow stems to prepare (default: all)")
    args = ap.parse_args(argv)
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True  # as `main.py --cpu`: the builders only need module shapes
    releases = _pack_module("network.config").RELEASES_BY_NAME
    known = {name: f.release for name, f in _pack_module("files.model_files").BY_NAME.items()}
    needs = all_needs(args.workflows, releases, known)
    if args.only:
        needs = {k: v for k, v in needs.items() if k in args.only}
    manifest = {"files": {}, "unsupported": {}, "notes": []}
    done, kept = {}, set()
    for stem, items in needs.items():
        for need in items:
            dest = (args.out / "input" if need.folder == "input" else args.out / "models" / need.folder) / need.name
            key = (need.folder, need.name)
            if key in done:
                if done[key] != (need.kind, need.what):
                    raise ValueError(f"{need.name}: needed as {done[key]} and as {(need.kind, need.what)}")
                continue
            done[key] = (need.kind, need.what)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                if need.kind == "pid":
                    write_pid(dest, need.what)
                elif need.kind == "image":
                    write_image(dest)
                elif need.kind == "latent":
                    write_latent(dest, need.what)
                elif need.kind == "gemma":
                    _link(gemma_blob(), dest)
                else:
                    blob = build_blob(need.kind, need.what, manifest["notes"])
                    kept.add(blob)
                    _link(blob, dest)
            except (LookupError, ImportError) as e:
                manifest["unsupported"].setdefault(stem, []).append(f"{need.name}: {e}")
                continue
            manifest["files"][f"{need.folder}/{need.name}"] = f"{need.kind}:{need.what}"
    for stem, items in needs.items():  # a file that failed for one workflow fails the others too
        for need in items:
            if f"{need.folder}/{need.name}" not in manifest["files"] and stem not in manifest["unsupported"]:
                manifest["unsupported"][stem] = [f"{need.name}: not available on this ComfyUI"]
    prune_stale(kept)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _log(f"wrote {args.out} ({len(manifest['files'])} files; unsupported here: "
         f"{sorted(manifest['unsupported']) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
