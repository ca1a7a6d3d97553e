"""PiD Load Model's attention = comfy gives PiD's own values, in a real ComfyUI (host venv; not CI).

    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/attention_check.py     # H: ~/.cache/comfy_host_v033

For each attention backend ComfyUI can be started with on a CPU (its default, and
--use-pytorch-cross-attention, --use-split-cross-attention, --use-quad-cross-attention), in a process
of its own as ComfyUI picks the backend once at start: tiny random PiD nets of every kind decode the
same latent in fp32, 4 steps, with the attention PiD Load Model's ``comfy`` choice gives
(``nodes.host.attention_function``) and with pid_core's SDPA. Prints the backend ComfyUI chose and
the largest difference in units of fp32 epsilon (images in [0, 1]); exit 1 above 64 units (the
parity tests' fp32 rule).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

from pack_import import import_pack

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_pid_attention_check"
BACKENDS = ["", "--use-pytorch-cross-attention", "--use-split-cross-attention", "--use-quad-cross-attention"]
KINDS = {"flux_2k": "flux", "sdxl_2kto4k": "sdxl", "flux2_2k": "flux2", "flux_v1.5": "flux", "flux2_v1.5": "flux2"}
LIMIT_UNITS = 64


def run_backend(flag: str) -> dict:
    """Inside one process: start ComfyUI's attention module with ``flag`` and compare every kind."""
    import comfy.options
    import torch

    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu", *([flag] if flag else [])]
    attention = importlib.import_module("comfy.ldm.modules.attention")
    import_pack(PACKAGE)
    host = importlib.import_module(f"{PACKAGE}.nodes.host")
    decoder = importlib.import_module(f"{PACKAGE}.pid_core.decoding.decoder")
    rw = importlib.import_module(f"{PACKAGE}.pid_core.network.random_weights")
    comfy_attention = host.attention_function("comfy")
    eps = torch.finfo(torch.float32).eps
    out = {"flag": flag or "(default)", "backend": attention.optimized_attention.__name__, "kinds": {}}
    for kind, fmt in KINDS.items():
        cfg = rw.tiny_config(kind)
        sd = rw.random_state_dict(cfg, seed=3)
        images = []
        for attend in (None, comfy_attention):
            dec = decoder.load_decoder(sd, dtype="fp32", name_hint=kind,
                                       **({"attention": attend} if attend else {}))
            gen = torch.Generator().manual_seed(5)
            latent = torch.randn(1, cfg.latent_channels, 4, 4, generator=gen)
            text = torch.randn(1, 300, 2304, generator=gen)
            images.append(dec.decode(latent, 0.4, text, seed=7, steps=4, latent_format=fmt))
        diff = (images[0] - images[1]).abs().max().item()
        out["kinds"][kind] = diff / eps
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(run_backend(args.child)))
        return 0
    worst = 0.0
    print(f"| ComfyUI started with | optimized_attention | {' | '.join(KINDS)} |  (max |comfy - pytorch| "
          f"of the decoded image, units of fp32 eps)")
    print("|---|---|" + "---|" * len(KINDS))
    for flag in BACKENDS:
        res = subprocess.run([sys.executable, __file__, f"--child={flag}"], capture_output=True, text=True)
        if res.returncode:
            print(f"| {flag or '(default)'} | failed: {(res.stderr.strip().splitlines() or ['?'])[-1]} |")
            worst = float("inf")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        worst = max(worst, *r["kinds"].values())
        print(f"| {r['flag']} | {r['backend']} | " + " | ".join(f"{v:.1f}" for v in r["kinds"].values()) + " |")
    ok = worst <= LIMIT_UNITS
    print(f"largest difference {worst:.1f} eps32 (limit {LIMIT_UNITS}): {'pass' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
