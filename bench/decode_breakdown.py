"""Where a decode's time goes: network calls vs the work around them (a script, not a test).

    python -m bench.decode_breakdown --device cpu --dtypes bf16,fp32 --size 512

Times one full-size random-weight decode per dtype (after a warm-up) and splits it into the
network calls (``PiDNet.velocity``), the adapter's once-per-decode trunk (``LatentAdapter.encode``),
the noise draws (``NoiseSource.next``), the float64 ``x0`` (``velocity_to_x0``), the re-noise, and
the rest (input checks, normalisation, the final ``(x + 1) / 2`` and clamp). Wrappers time each
piece with a device synchronisation. On a GPU the figures are wall seconds; on the CPU they are
the process's CPU seconds (``time.process_time``), which a busy shared machine disturbs far less
than wall time (run with OMP_NUM_THREADS=1 for the cleanest figures).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from bench import unbounded
from pid_core.decoding import decoder as decoder_mod
from pid_core.decoding import noise, sampler
from pid_core.decoding.decoder import load_decoder
from pid_core.network.adapter import LatentAdapter
from pid_core.network.config import RELEASES_BY_NAME
from pid_core.network.model import PiDNet
from pid_core.network.random_weights import random_state_dict

SPENT: dict[str, float] = defaultdict(float)


def clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def timed(label, fn, device):
    def wrapper(*args, **kwargs):
        t0 = clock(device)
        out = fn(*args, **kwargs)
        SPENT[label] += clock(device) - t0
        return out
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bf16-size", type=int, default=None, help="another size for bf16 (CPUs without "
                    "native bf16 convolutions spend minutes in the adapter trunk)")
    ap.add_argument("--release", default="flux_v1.5")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = RELEASES_BY_NAME[args.release].config
    sd = random_state_dict(cfg, seed=0, dtype=torch.bfloat16)
    y = torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=torch.Generator().manual_seed(2))
    patches = [(PiDNet, "velocity", "network calls"), (LatentAdapter, "encode", "adapter trunk"),
               (noise.Noise, "next", "noise draws"), (sampler, "renoise", "re-noise"),
               (decoder_mod, "velocity_to_x0", "x0 (float64)")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for (owner, name, label), (_, _, fn) in zip(patches, originals):
        setattr(owner, name, timed(label, fn, dev))
    print(f"{args.release}, 4 steps, batch 1, device {dev}, {torch.get_num_threads()} threads")
    print("| dtype | size | decode s | network calls | adapter trunk | noise draws | x0 (float64) | re-noise | rest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        size = args.bf16_size if dtype == "bf16" and args.bf16_size else args.size
        lat = size // cfg.output_factor
        z = torch.randn(1, cfg.latent_channels, lat, lat, generator=torch.Generator().manual_seed(1))
        dec = unbounded(load_decoder(sd, device=dev, dtype=dtype))
        for run in range(2):   # warm-up, then the timed decode
            SPENT.clear()
            t0 = clock(dev)
            dec.decode(z, 0.3, y, latent_format="flux", seed=3)
            total = clock(dev) - t0
        parts = [SPENT[label] for _, _, label in patches]
        rest = total - sum(parts)
        cells = " | ".join(f"{v:.2f} ({100 * v / total:.1f} %)" for v in
                           [parts[0], parts[1], parts[2], parts[4], parts[3], rest])
        print(f"| {dtype} | {size}x{size} | {total:.2f} | {cells} |")
        del dec
    for owner, name, fn in originals:
        setattr(owner, name, fn)


if __name__ == "__main__":
    main()
