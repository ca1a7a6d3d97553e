"""Record facts of a real ComfyUI for the tests (run it in the host's venv; not part of CI).

    H=~/.cache/comfy_host_v033
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/record_families.py families
        -> tests/fixtures/comfy_model_families.json: for every class in comfy.supported_models.models
           its latent format (class, channels, dimensions, spatial downscale) and its sampling type
           (ModelType and the ModelSampling classes ComfyUI builds for it, plus sampling_settings)
    COMFY_HOSTENV=$H python3 tools/record_families.py core-nodes [--port 8212]
        -> tests/fixtures/core_nodes_v033.json: /object_info of the core node types the shipped
           workflows use, served by that host with no custom nodes (file combos become
           {"files": folder}, as in tests/fixtures/core_nodes.json)

The sampling type is read the way ComfyUI decides it: the supported-model class is instantiated
with its own unet_config (model creation disabled, ``disable_unet_model_creation``), ``get_model``
is called with an empty state dict, and the resulting model's ``model_type`` and ``model_sampling``
are recorded. Where a class needs more of its config than it declares, the error is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
FILE_INPUTS = {("UNETLoader", "unet_name"): "diffusion_models", ("CLIPLoader", "clip_name"): "text_encoders",
               ("DualCLIPLoader", "clip_name1"): "text_encoders", ("DualCLIPLoader", "clip_name2"): "text_encoders",
               ("VAELoader", "vae_name"): "vae", ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
               ("LoadImage", "image"): "input", ("LoadLatent", "latent"): "input"}
# Sizes some classes read from unet_config in __init__ without declaring them.
CONFIG_DEFAULTS = {"hidden_size": 3072, "dim": 3840, "in_channels": 16}


def family_record(cls) -> dict:
    import torch

    rec = {"image_model": cls.unet_config.get("image_model") or cls.unet_config.get("audio_model")}
    lf = cls.latent_format
    lf = lf() if isinstance(lf, type) else lf
    rec.update(latent_format=type(lf).__name__, latent_channels=getattr(lf, "latent_channels", None),
               latent_dimensions=getattr(lf, "latent_dimensions", 2),
               spacial_downscale_ratio=getattr(lf, "spacial_downscale_ratio", 8))
    unet_config = {**CONFIG_DEFAULTS, **cls.unet_config, "disable_unet_model_creation": True}
    try:
        config = cls(unet_config)
        with torch.device("meta"):
            model = config.get_model({}, "", device="meta")
        sampling = model.model_sampling
        rec.update(model_type=model.model_type.name, model_base=type(model).__name__,
                   model_sampling=[c.__name__ for c in type(sampling).__mro__[1:]
                                   if c.__module__ == "comfy.model_sampling"],
                   sampling_settings={k: v for k, v in sorted(config.sampling_settings.items())
                                      if isinstance(v, (int, float, str, bool))},
                   latent_format_after_get_model=type(model.latent_format).__name__)
    except Exception as e:  # noqa: BLE001 - recorded, not hidden
        rec["sampling_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return rec


def record_families(out: Path) -> None:
    from comfy.cli_args import args

    args.cpu = True
    import comfy.supported_models as sm
    import comfyui_version

    fams = {cls.__name__: family_record(cls) for cls in sm.models}
    data = {"_about": ("Every class in comfy.supported_models.models of a real ComfyUI: latent format and "
                       "sampling type (ModelType + ModelSampling classes), recorded by tools/record_families.py."),
            "comfyui": comfyui_version.__version__, "families": fams}
    out.write_text(json.dumps(data, indent=1) + "\n")
    bad = [k for k, v in fams.items() if "sampling_error" in v]
    print(f"wrote {out}: {len(fams)} families ({len(bad)} without a sampling type: {bad})")


def _files_combo(spec, folder):
    rest = spec[1:] if len(spec) > 1 and isinstance(spec[1], dict) else []
    keep = [{k: v for k, v in r.items() if k in ("image_upload",)} for r in rest]
    return [{"files": folder}] + [k for k in keep if k]


def record_core_nodes(out: Path, port: int) -> None:
    harness = ROOT.parent / "shared" / "tools" / "comfy_host.py"
    used = set()
    for p in sorted((ROOT / "workflows").glob("*.json")):
        used |= {n["type"] for n in json.loads(p.read_text())["nodes"]}
    subprocess.run([sys.executable, str(harness), "serve", "--port", str(port), "--allow-empty"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        info = json.loads(opener.open(f"http://127.0.0.1:{port}/object_info", timeout=60).read())
        stats = json.loads(opener.open(f"http://127.0.0.1:{port}/system_stats", timeout=60).read())
    finally:
        subprocess.run([sys.executable, str(harness), "stop", "--port", str(port)], check=False)
    nodes = {}
    for name in sorted(used):
        if name not in info:
            continue
        d = info[name]
        for section in ("required", "optional"):
            for inp, spec in d["input"].get(section, {}).items():
                if (name, inp) in FILE_INPUTS:
                    d["input"][section][inp] = _files_combo(spec, FILE_INPUTS[(name, inp)])
        nodes[name] = {k: d[k] for k in ("input", "input_order", "output", "output_name", "output_node") if k in d}
    version = stats["system"].get("comfyui_version", "?")
    data = {"_about": (f"Definitions of the core ComfyUI nodes the shipped workflows use, recorded from GET "
                       f"/object_info of ComfyUI {version} with no custom nodes and no models "
                       "(tools/record_families.py core-nodes). File combos are {\"files\": folder}."),
            "comfyui": version, "nodes": nodes,
            "absent": sorted(t for t in used if t not in info and t not in ("Note", "MarkdownNote")
                             and not t.startswith("PiD_"))}
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}: {len(nodes)} node types from ComfyUI {version}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["families", "core-nodes"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--port", type=int, default=8212)
    a = ap.parse_args(argv)
    if a.what == "families":
        record_families(a.out or FIXTURES / "comfy_model_families.json")
    else:
        os.environ.setdefault("COMFY_HOSTENV", str(Path.home() / ".cache" / "comfy_host_v033"))
        record_core_nodes(a.out or FIXTURES / "core_nodes_v033.json", a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
