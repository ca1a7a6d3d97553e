"""Benchmark ``decode-batch``: items/s on 1 process vs N processes (torchrun, gloo on the CPU).

A tiny random PiD net (``pid_core.network.random_weights``) and ``--items`` random latents with one
text-embeds file are written to a temporary folder; each configuration runs the real command
line in a fresh output folder and reports two rates: the batch loop alone (from the summary
line, the slowest rank's time) and the whole command (process start, torch import, decoder
load, process-group set-up). Outputs of every configuration are checked to be byte-identical.

    python -m bench.bench_batch                        # CPU: 1 process vs 2 processes
    python -m bench.bench_batch --items 32 --latent 16 --procs 1 2 4 --device cuda   # GPUs

On the CPU each process gets ``--threads`` threads (default 1), so N processes use N cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from pid_core.network.random_weights import random_state_dict, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) images decoded.* in ([\d.]+) s")


def make_inputs(d: Path, items: int, side: int) -> Path:
    save_file(random_state_dict(tiny_config("flux_v1.5")), str(d / "tiny.safetensors"))
    save_file({"t": torch.randn(1, 300, 2304)}, str(d / "emb.safetensors"))
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(items):
        save_file({"latent_tensor": torch.randn(1, 16, side, side, generator=g),
                   "latent_format_version_0": torch.tensor([])}, str(d / f"l{i:04d}.latent"))
        rows.append({"latent": f"l{i:04d}.latent", "text_embeds": "emb.safetensors", "seed": i})
    manifest = d / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def run(procs: int, d: Path, manifest: Path, device: str, threads: int) -> tuple[float, float, Path]:
    out = d / f"out_{procs}"
    cmd = ["-m", "pid_core", "decode-batch", "--checkpoint", str(d / "tiny.safetensors"), "--manifest",
           str(manifest), "--out", str(out), "--latent-format", "flux", "--device", device, "--dtype", "fp32",
           "--no-progress"]
    launch = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                   "--nproc-per-node", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    res = subprocess.run(launch + cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = SUMMARY.search(res.stdout)
    if res.returncode != 0 or m is None:
        sys.exit(f"decode-batch with {procs} process(es) failed:\n{res.stdout}\n{res.stderr[-3000:]}")
    return float(m.group(2)), wall, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--latent", type=int, default=8, help="latent side (output side = 32x this)")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="threads per process on the CPU")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        manifest = make_inputs(d, args.items, args.latent)
        side = args.latent * 32
        print(f"tiny flux_v1.5 net, {args.items} items of {side}x{side} px, 4 steps, fp32, {args.device}, "
              f"{args.threads} thread(s) per process")
        print("| processes | batch loop s | items/s (loop) | whole command s | items/s (command) | speed-up (loop) |")
        print("|---|---|---|---|---|---|")
        base, first_out = None, None
        for n in args.procs:
            loop, wall, out = run(n, d, manifest, args.device, args.threads)
            base = base or loop
            print(f"| {n} | {loop:.2f} | {args.items / loop:.2f} | {wall:.2f} | {args.items / wall:.2f} | "
                  f"{base / loop:.2f}x |")
            pngs = {p.name: p.read_bytes() for p in out.glob("*.png")}
            if first_out is None:
                first_out = pngs
            elif pngs != first_out:
                sys.exit(f"outputs with {n} processes differ from those with {args.procs[0]}")
        print(f"outputs identical across {args.procs} processes: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
