"""Which model and input files the shipped workflows load, read from the workflows themselves.

File names come from the loader nodes' widget values, so renaming a model file in a workflow needs
no change here. What a file must *be* is decided from the graph, never from its name:

* UNETLoader: the family from the CLIP type loaded beside it (flux -> FLUX.1, lumina2 -> Z-Image,
  flux2 -> FLUX.2 klein, or FLUX.2 dev when a FluxGuidance node conditions it, qwen_image ->
  Qwen-Image);
* CheckpointLoaderSimple: SDXL or SD3, from the latent family of the PiD checkpoint it feeds;
* CLIPLoader / DualCLIPLoader: the text encoder ComfyUI builds for that CLIP type;
* VAELoader: the VAE of the PiD checkpoint's latent family;
* PiD_LoadModel: the PiD release (by file name), and the Gemma-2-2B text encoder;
* LoadImage / LoadLatent: an example image / a latent of the PiD checkpoint's shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

UNET_FAMILY_BY_CLIP_TYPE = {"flux": "flux", "lumina2": "zimage", "flux2": "flux2", "qwen_image": "qwen_image"}
TEXT_ENCODER_BY_CLIP_TYPE = {"lumina2": "qwen3_4b", "flux2": "qwen3_4b", "qwen_image": "qwen25_7b"}
CHECKPOINT_FAMILY_BY_PID_FAMILY = {"sdxl": "sdxl", "sd3": "sd3"}
LATENT_BY_PID_FAMILY = {"flux": (16, 8), "sd3": (16, 8), "qwenimage": (16, 8), "sdxl": (4, 8), "flux2": (128, 16)}


@dataclass(frozen=True)
class Need:
    folder: str   # models/<folder>/ or "input"
    name: str     # file name, as the workflow says
    kind: str     # unet | text_encoder | checkpoint | vae | pid | gemma | image | latent
    what: str     # family / encoder / release


def pid_release(filename: str, releases: dict, known: dict | None = None) -> str:
    """The PiD release a workflow's checkpoint name stands for: a file the pack's model table knows
    (``known``: file name -> release), an exact release file name, or the release whose family,
    version and resolution words all occur in the name."""
    if known and known.get(filename):
        return known[filename]
    for name, rel in releases.items():
        if rel.filename == filename:
            return name
    low = filename.lower().replace("pt5", ".5").replace("_5", ".5")
    scored = []
    for name, rel in releases.items():
        family = name.split("_")[0]
        if not re.search(rf"{re.escape(family)}(?![0-9])", low):
            continue
        version_ok = ("v1.5" in low) == (rel.version == "v1.5")
        res_ok = ("2kto4k" in low) == (rel.resolution == "2kto4k") or rel.version == "v1.5"
        if version_ok and res_ok:
            scored.append(name)
    if len(scored) != 1:
        raise ValueError(f"cannot tell which PiD release {filename!r} is (candidates {scored})")
    return scored[0]


def _widgets(node) -> list:
    return node.get("widgets_values") or []


def workflow_needs(wf: dict, releases: dict, known: dict | None = None) -> list:
    nodes = [n for n in wf["nodes"] if n.get("mode", 0) == 0]
    by_type = {}
    for n in nodes:
        by_type.setdefault(n["type"], []).append(n)
    pid_families = set()
    needs = []
    for n in by_type.get("PiD_LoadModel", []):
        ckpt, te = _widgets(n)[:2]
        release = pid_release(ckpt, releases, known)
        pid_families.update(releases[release].formats)
        needs.append(Need("pid", ckpt, "pid", release))
        if te and te != "none":
            needs.append(Need("text_encoders", te, "gemma", "gemma2_2b"))
    clip_types = [_widgets(n)[2] if n["type"] == "DualCLIPLoader" else _widgets(n)[1]
                  for n in by_type.get("CLIPLoader", []) + by_type.get("DualCLIPLoader", [])]
    for n in by_type.get("CLIPLoader", []):
        name, clip_type = _widgets(n)[:2]
        needs.append(Need("text_encoders", name, "text_encoder", TEXT_ENCODER_BY_CLIP_TYPE[clip_type]))
    for n in by_type.get("DualCLIPLoader", []):
        a, b, clip_type = _widgets(n)[:3]
        if clip_type != "flux":
            raise ValueError(f"DualCLIPLoader type {clip_type!r}: no stand-in")
        if "t5" in a.lower() and "t5" not in b.lower():
            a, b = b, a
        needs += [Need("text_encoders", a, "text_encoder", "clip_l"), Need("text_encoders", b, "text_encoder", "t5xxl")]
    for n in by_type.get("UNETLoader", []):
        families = {UNET_FAMILY_BY_CLIP_TYPE[t] for t in clip_types if t in UNET_FAMILY_BY_CLIP_TYPE}
        if len(families) != 1:
            raise ValueError(f"UNETLoader {_widgets(n)[0]!r}: cannot tell the family from CLIP types {clip_types}")
        family = families.pop()
        if family == "flux2" and "FluxGuidance" in by_type:   # guidance-distilled: FLUX.2 dev
            family = "flux2_dev"
        needs.append(Need("diffusion_models", _widgets(n)[0], "unet", family))
    for n in by_type.get("CheckpointLoaderSimple", []):
        fams = {CHECKPOINT_FAMILY_BY_PID_FAMILY[f] for f in pid_families if f in CHECKPOINT_FAMILY_BY_PID_FAMILY}
        if len(fams) != 1:
            raise ValueError(f"checkpoint {_widgets(n)[0]!r}: cannot tell SDXL from SD3 ({pid_families})")
        needs.append(Need("checkpoints", _widgets(n)[0], "checkpoint", fams.pop()))
    for n in by_type.get("VAELoader", []):
        vae = "sdxl" if pid_families == {"sdxl"} else "flux"
        if pid_families & {"flux2"}:
            raise ValueError("no FLUX.2 VAE stand-in")
        needs.append(Need("vae", _widgets(n)[0], "vae", vae))
    for n in by_type.get("LoadImage", []):
        needs.append(Need("input", _widgets(n)[0], "image", "rgb"))
    for n in by_type.get("LoadLatent", []):
        fam = next(iter(sorted(pid_families)), "flux")
        needs.append(Need("input", _widgets(n)[0], "latent", fam))
    return needs


def all_needs(workflows_dir: Path, releases: dict, known: dict | None = None) -> dict:
    """workflow stem -> list of Need, for every workflow file in the folder."""
    return {p.stem: workflow_needs(json.loads(p.read_text()), releases, known)
            for p in sorted(Path(workflows_dir).glob("*.json"))}
