"""Peak RAM of a batch of video frames through PiD Decode Latent, frame by frame, vs one frame (CPU).

Loads the pack as ComfyUI does, a tiny random FLUX v1.5 PiD (the network's size does not change the
buffers a frame needs: canvas, noise and the output image), and decodes ``--frames`` latents of
``--latent`` px side (x32 output: 128 -> 4096) with the memory budget ComfyUI would report on a
machine with ``--budget-gb`` free, so a batch that does not fit is decoded one frame at a time.
Each case runs in a fresh process; prints its peak RSS, seconds and output.

    python -m bench.bench_frames                    # 1 frame and 16 frames, 128 -> 4096
    python -m bench.bench_frames --frames 1,4 --latent 64 --steps 1
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "pid_pack_bench_frames"


def run_case(frames: int, latent: int, steps: int, budget_gb: float, noise: str) -> dict:
    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = pack
    spec.loader.exec_module(pack)
    rw = importlib.import_module(f"{PACK}.pid_core.network.random_weights")
    folders = importlib.import_module(f"{PACK}.nodes.model_folders")
    host = importlib.import_module(f"{PACK}.nodes.host")
    # the budget ComfyUI reports: free memory minus its reserve, plus PiD's weights (nodes.host)
    host.memory_budget = lambda device, resident: int(budget_gb * 1e9) + resident

    class Encoder:
        bos_id, pad_id = 2, 0

        def tokenize(self, text):
            return [3 + ord(c) % 50 for c in text]

        def hidden_states(self, ids, mask):
            return torch.sin(ids[..., None].float() * torch.linspace(0.01, 1.0, 2304))

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pid").mkdir()
        weights = rw.random_state_dict(rw.tiny_config("flux_v1.5"), seed=1)
        save_file(weights, str(Path(tmp) / "pid" / "pid_tiny.safetensors"))
        os.environ[folders.ENV_MODELS_DIR] = tmp
        load = pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"]().load
        pid, _ = load("pid_tiny.safetensors", "none", "fp32", clip=Encoder())
        z = torch.randn(frames, 16, latent, latent, generator=torch.Generator().manual_seed(0))
        plan = pid.decoder.plan(z.shape, tile=None)
        t0 = time.perf_counter()
        image, _ = pack.NODE_CLASS_MAPPINGS["PiD_DecodeLatent"]().decode(
            pid, {"samples": z}, 0.0, "a frame", 0, steps, latent_format="flux", noise=noise)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(frames=frames, output=list(image.shape), seconds=round(seconds, 1), peak_rss_gib=peak / 2**30,
                output_gib=image.numel() * image.element_size() / 2**30,
                batch_at_once_estimate_gib=plan.estimate.total / 2**30, budget_gb=budget_gb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="1,16", help="comma list of batch sizes")
    ap.add_argument("--latent", type=int, default=128, help="latent side (x32 output)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--budget-gb", type=float, default=8.0, help="free memory ComfyUI would report")
    ap.add_argument("--noise", default="per image", choices=["per image", "same for every frame"])
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(run_case(args.child, args.latent, args.steps, args.budget_gb, args.noise)))
        return
    print(f"PiD Decode Latent, tiny FLUX v1.5 net, {args.latent}x{args.latent} latents -> {args.latent * 32} px, "
          f"{args.steps} steps, CPU, ComfyUI budget {args.budget_gb:g} GB")
    print("| frames | output | seconds | peak RSS GiB | of it the output IMAGE GiB | batch at once would need GiB |")
    print("|---|---|---|---|---|---|")
    for n in (int(v) for v in args.frames.split(",")):
        cmd = [sys.executable, "-m", "bench.bench_frames", "--child", str(n), "--latent", str(args.latent),
               "--steps", str(args.steps), "--budget-gb", str(args.budget_gb), "--noise", args.noise]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            print(f"| {n} | failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode} |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"| {n} | {'x'.join(map(str, r['output']))} | {r['seconds']} | {r['peak_rss_gib']:.2f} | "
              f"{r['output_gib']:.2f} | {r['batch_at_once_estimate_gib']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
