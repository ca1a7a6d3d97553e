"""Benchmark very large tiled decodes on the CPU: time and peak RSS per output size.

A micro random-weight PiD (FLUX v1.5 layout, ``pid_core.network.random_weights``) decodes square outputs
of 4096^2 .. 16384^2 in tiles of ``--tile`` px, each size in a fresh subprocess, so the peak
resident set (``VmHWM``, reset after loading with ``/proc/self/clear_refs``) is that decode's
own. With a network this small the figures show what the tiling machinery itself costs: host
memory per output pixel (the canvas) and time per megapixel (which must stay flat: linear cost;
on a shared machine compare the CPU seconds, which other processes do not inflate).
The network's own share grows with a real checkpoint; its host-side extra (the per-tile adapter
features) is printed from ``pid_core.decoding.memory.host_bytes`` for the released v1 / v1.5 nets.

    python -m bench.bench_large                          # 4096, 8192, 12288, 16384
    python -m bench.bench_large --sizes 4096,8192 --steps 4

A size is skipped when its predicted canvas does not fit in ``MemAvailable`` with 30 % spare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from pid_core.decoding import memory
from pid_core.decoding.decoder import load_decoder
from pid_core.network.config import RELEASES_BY_NAME
from pid_core.network.random_weights import random_state_dict, tiny_config

GiB = 1 << 30
MICRO = dict(hidden_size=16, num_heads=1, patch_depth=1, pixel_dim=4, pixel_attn_dim=16, pixel_heads=1,
             pixel_depth=1, mlp_hidden=32, pixel_mlp_hidden=8, adapter_dim=16, adapter_res_blocks=1)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def one(side: int, steps: int, tile: int, threads: int) -> dict:
    """Decode ``side``^2 once in this process; return its figures."""
    torch.set_num_threads(threads)
    dec = load_decoder(random_state_dict(tiny_config("flux_v1.5", **MICRO)), dtype="fp32")
    z = torch.randn(1, 16, side // 32, side // 32, generator=torch.Generator().manual_seed(0))
    y = torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(1))
    plan = dec.plan(z.shape, tile=tile)
    dec.decode(torch.randn(1, 16, 2, 2), 0.0, y, latent_format="flux", steps=1)   # warm-up
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")          # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _status("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    out = dec.decode(z, 0.0, y, latent_format="flux", steps=steps, plan=plan)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status("VmHWM")
    tiles_px = sum(t.h * t.w for t in plan.tiles)
    return {"side": side, "mp": side * side / 1e6, "tiles": plan.n_tiles, "processed_mp": tiles_px / 1e6,
            "seconds": seconds, "cpu_seconds": cpu, "base_rss": base, "peak_rss": peak,
            "predicted": memory.host_bytes(dec.net.cfg, plan, dec.dtype), "shape": list(out.shape)}


def predicted(side: int, tile: int, release: str) -> int:
    """Host bytes of the canvas of a real checkpoint (bf16) at ``side``^2 in ``tile`` px tiles."""
    plan = memory.tiled_plan(RELEASES_BY_NAME[release].config, side, side, (tile, tile))
    return memory.host_bytes(RELEASES_BY_NAME[release].config, plan, torch.bfloat16)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4096,8192,12288,16384")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tile", type=int, default=2304, help="tile side in px (2304: 1.27x overlap at all sizes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one, a.steps, a.tile, a.threads)))
        return 0
    rows = []
    for side in (int(s) for s in a.sizes.split(",")):
        need = predicted(side, a.tile, "flux_v1.5")
        free = memory.available_bytes("cpu") or 0
        if need * 1.3 > free:
            print(f"{side}^2: skipped, needs ~{need / GiB:.1f} GiB, {free / GiB:.1f} GiB available")
            continue
        cmd = [sys.executable, "-m", "bench.bench_large", "--one", str(side), "--steps", str(a.steps),
               "--tile", str(a.tile), "--threads", str(a.threads)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append(r)
        print(f"{side}^2 done in {r['seconds']:.0f} s, peak RSS {r['peak_rss'] / GiB:.2f} GiB", flush=True)
    print(f"\nmicro PiD net (FLUX v1.5 layout), CPU, {a.threads} threads, {a.steps} steps, tiles of {a.tile} px"
          f" (overlap {memory.default_overlap(a.tile, a.tile)} px)\n")
    print("| output | MP | tiles | s | s / MP | s / processed MP | CPU s / processed MP | peak RSS | "
          "RSS above start | B / px above start | canvas predicted | v1.5 net canvas | v1 net canvas |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        side, mp = r["side"], r["mp"]
        above = r["peak_rss"] - r["base_rss"]
        print(f"| {side}² | {mp:.0f} | {r['tiles']} | {r['seconds']:.0f} | {r['seconds'] / mp:.2f} | "
              f"{r['seconds'] / r['processed_mp']:.2f} | {r['cpu_seconds'] / r['processed_mp']:.2f} | "
              f"{r['peak_rss'] / GiB:.2f} GiB | "
              f"{above / GiB:.2f} GiB | {above / (mp * 1e6):.1f} | {r['predicted'] / GiB:.2f} GiB | "
              f"{predicted(side, a.tile, 'flux_v1.5') / GiB:.2f} GiB | "
              f"{predicted(side, a.tile, 'flux_2k') / GiB:.2f} GiB |")
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        slope = (hi["peak_rss"] - lo["peak_rss"]) / ((hi["mp"] - lo["mp"]) * 1e6)
        fixed = lo["peak_rss"] - slope * lo["mp"] * 1e6
        print(f"\nmarginal host memory {slope:.1f} bytes per output pixel (slope {lo['side']}² -> "
              f"{hi['side']}²), fixed part {fixed / GiB:.2f} GiB (process, network, one tile's work)")
        for ram in (8, 16, 32):
            for name in ("flux_v1.5", "flux_2k"):
                per_px = predicted(16384, a.tile, name) / 16384 ** 2
                print(f"{ram} GB of RAM, {name} net: canvas budget ~{ram - 3} GB (3 GB for the OS and "
                      f"ComfyUI) -> {(ram - 3) * 1e9 / per_px / 1e6:.0f} MP "
                      f"(~{((ram - 3) * 1e9 / per_px) ** 0.5:.0f}² px) at {per_px:.1f} B/px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
