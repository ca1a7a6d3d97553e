"""Write small stand-in model files for running the workflows in a real ComfyUI (no downloads).

    H=~/.cache/comfy_host
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/host_fixtures.py OUT_DIR [--gemma FILE]

OUT_DIR gets a ComfyUI ``models/`` layout plus an ``input/`` folder:

* ``models/pid/pid_flux_v1.5.safetensors`` — a tiny random PiD (FLUX v1.5 family, real key names,
  pid_core.random_weights), detected like the real file;
* ``models/vae/ae.safetensors`` — a FLUX.1-shaped VAE (16 latent channels, no quant convs, as
  ComfyUI detects ``ae.safetensors``) with random weights. ComfyUI builds its VAEs with fixed
  widths and leaves missing weights uninitialised, so the file must be full size (~84M params,
  fp16 ~170 MB); the values are seeded random, scaled so activations stay finite;
* ``models/text_encoders/gemma_2_2b_it_elm_bf16.safetensors`` — a symlink to ``--gemma`` (a
  complete Gemma-2-2B file with its ``spiece_model``, e.g. the random one made by
  tools/text_equivalence.py ``prepare``); ComfyUI's Gemma class is fixed-size too;
* ``input/example.png`` (256x192) and ``input/example_flux.latent`` (1x16x8x8 with the
  ``latent_format_version_0`` marker).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def _pack_module(name: str):
    pkg = "comfyui_pid_fixtures"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(pkg, ROOT / "pid_core" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "pid_core")])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{pkg}.{name}")


def flux_vae_state_dict(seed: int = 0) -> dict:
    from comfy.cli_args import args

    args.cpu = True  # as `main.py --cpu`: this tool only needs the module shapes
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    cfg = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3,
           "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
           "dropout": 0.0}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    with torch.device("meta"):
        parts = {"encoder": Encoder(**cfg), "decoder": Decoder(**cfg)}
    for prefix, module in parts.items():
        for key, p in module.state_dict().items():
            if key.endswith("bias"):
                t = torch.zeros(p.shape)
            elif p.dim() == 1:
                t = torch.ones(p.shape)  # norm scales
            else:
                fan_in = p[0].numel()
                t = torch.randn(p.shape, generator=gen) / fan_in ** 0.5
            out[f"{prefix}.{key}"] = t.to(torch.float16)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--gemma", type=Path, help="a complete Gemma-2-2B text-encoder file")
    args = ap.parse_args()
    models, inputs = args.out / "models", args.out / "input"
    for d in ("pid", "vae", "text_encoders"):
        (models / d).mkdir(parents=True, exist_ok=True)
    inputs.mkdir(parents=True, exist_ok=True)

    rw = _pack_module("random_weights")
    save_file(rw.random_state_dict(rw.tiny_config("flux_v1.5"), seed=0),
              str(models / "pid" / "pid_flux_v1.5.safetensors"))
    save_file(flux_vae_state_dict(), str(models / "vae" / "ae.safetensors"))
    if args.gemma:
        link = models / "text_encoders" / "gemma_2_2b_it_elm_bf16.safetensors"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(args.gemma.resolve(), link)

    y, x = np.mgrid[0:192, 0:256]
    rgb = np.stack([x / 255.0, y / 191.0, 0.5 + 0.5 * np.sin(x / 9.0) * np.cos(y / 7.0)], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(inputs / "example.png")
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])},
              str(inputs / "example_flux.latent"))
    print(f"wrote {models} and {inputs}")


if __name__ == "__main__":
    main()
