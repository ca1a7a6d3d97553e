"""Benchmark PiD decodes: time, memory, achieved TFLOP/s; optionally against upstream PidNet.

Full-size networks with random weights (``pid_core.network.random_weights.random_state_dict`` on the
``config.RELEASES`` configs: the speed and memory of a decode do not depend on the values).
For every (family, output size): warm-up decodes, then the median of ``--repeat`` decodes;
prints and writes (CSV + markdown) the time per decode and per step, peak allocated/reserved
GPU memory, the memory estimator's prediction, achieved TFLOP/s from the analytic FLOP count
(``pid_core.decoding.memory.decode_flops``) and its fraction of the GPU's dense bf16 peak.

Run from the repository root (``-m`` puts it on the import path):

    python -m bench.bench_decode                      # CUDA: all families, 1024^2..4096^2 + 16:9
    python -m bench.bench_decode --device cpu         # CPU: small sizes, fp32 and bf16, one family
    python -m bench.bench_decode --reference-dir ~/src/PiD   # + upstream PidNet side by side

``--reference-dir DIR`` imports ``pid._src.networks.pid_net.PidNet`` from a checkout of
nv-tlabs/PiD given at run time (it needs ``loguru`` and ``pynvml`` importable; nothing of it is
part of this package) and times it in the same process on the same weights, the way upstream
runs it: fp32 master weights under ``torch.autocast(bf16)`` (on CUDA; fp32 or CPU autocast on
the CPU), the adapter recomputed at every step, float64 x0, noise from a device generator.
"""

from __future__ import annotations

import argparse
import csv
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

from bench import unbounded
from pid_core.decoding.decoder import DecodeOptions, load_decoder
from pid_core.decoding.memory import estimate_memory
from pid_core.decoding.sampler import t_schedule
from pid_core.network.config import RELEASES_BY_NAME, PiDNetConfig
from pid_core.network.flops import decode_flops
from pid_core.network.random_weights import random_state_dict

GiB = 1 << 30
# One release per distinct network shape (sd3/qwenimage share these).
FAMILIES = ("flux_2k", "sdxl_2kto4k", "flux2_2k", "dinov2_2k", "siglip_2k", "flux_v1.5", "flux2_v1.5")
GPU_SIZES = ("1024", "2048", "4096", "2304x4096")
CPU_SIZES = ("256", "512")
# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device-name fragment, from the vendors'
# data sheets; override with --peak-tflops.
BF16_PEAK = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
             ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0),
             ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("A10G", 70.0))


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def gpu_peak(name: str) -> float | None:
    for frag, tf in BF16_PEAK:
        if frag.lower() in name.lower():
            return tf
    return None


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, warmup: int, repeat: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(repeat):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def mem_peaks(dev) -> tuple[float | None, float | None]:
    if dev.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(dev) / GiB, torch.cuda.max_memory_reserved(dev) / GiB


def free(dev) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the reference
def upstream_kwargs(cfg: PiDNetConfig) -> dict:
    """``PidNet(**kwargs)`` for our config (inverse of config.from_upstream_kwargs)."""
    return dict(
        in_channels=3, num_groups=cfg.num_heads, hidden_size=cfg.hidden_size,
        pixel_hidden_size=cfg.pixel_dim, pixel_attn_hidden_size=cfg.pixel_attn_dim,
        pixel_num_groups=cfg.pixel_heads, patch_depth=cfg.patch_depth, pixel_depth=cfg.pixel_depth,
        num_text_blocks=4, patch_size=cfg.patch_size, txt_embed_dim=cfg.text_dim,
        txt_max_length=cfg.text_tokens, use_text_rope=True, text_rope_theta=cfg.text_rope_theta,
        rope_mode="ntk_aware", rope_ref_h=cfg.rope_ref_px, rope_ref_w=cfg.rope_ref_px,
        repa_encoder_index=6, enable_ed=False, lq_inject_mode="controlnet", lq_in_channels=0,
        lq_latent_channels=cfg.latent_channels, lq_hidden_dim=cfg.adapter_dim,
        lq_num_res_blocks=cfg.adapter_res_blocks, lq_latent_unpatchify_factor=cfg.unpatchify,
        lq_aux_rgb_head=False, lq_conv_padding_mode=cfg.conv_padding,
        lq_gate_type="sigma_aware_per_token_per_dim" if cfg.gate_per_dim else "sigma_aware_per_token",
        lq_interval=cfg.inject_interval, zero_init_lq=True, train_lq_proj_only=False,
        sr_scale=cfg.sr_scale, latent_spatial_down_factor=cfg.latent_down, pit_lq_inject=cfg.pit_gate,
    )


def import_reference(ref_dir: str):
    sys.path.insert(0, str(Path(ref_dir).expanduser().resolve()))  # only for this option
    from pid._src.networks.pid_net import PidNet  # type: ignore[import-not-found]
    return PidNet


def build_reference(PidNet, cfg: PiDNetConfig, sd: dict, dev: torch.device):
    net = PidNet(**upstream_kwargs(cfg))
    net.load_state_dict({k[4:]: v.float() for k, v in sd.items()}, strict=True)  # fp32 master
    return net.to(dev).eval().requires_grad_(False)


def reference_decode(net, z, y, sigma, size, steps, seed, dev, autocast_dtype):
    """Upstream's ``_student_sample_loop``: full net call (adapter included) every step."""
    h, w = size
    gen = torch.Generator(device=dev).manual_seed(seed)
    ts = torch.tensor(t_schedule(steps), dtype=torch.float32, device=dev)
    b = z.shape[0]
    ctx = torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(
        dev.type, enabled=False)
    with torch.no_grad(), ctx:
        x = torch.randn(b, 3, h, w, device=dev, generator=gen)
        for t_cur, t_next in zip(ts[:-1], ts[1:]):
            v = net(x, t_cur.expand(b) * 1000, y, lq_video_or_image=None, lq_latent=z,
                    degrade_sigma=sigma)
            x0 = (x.double() - t_cur.double() * v.double()).to(x.dtype)
            if t_next.item() > 0:
                eps = torch.randn(x0.shape, device=dev, dtype=x0.dtype, generator=gen)
                x = (1.0 - t_next) * x0 + t_next * eps
            else:
                x = x0
    return x.clamp(-1, 1)


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default=None, help="comma list of bf16/fp32 (CUDA: bf16; CPU: fp32,bf16)")
    ap.add_argument("--families", default=None,
                    help=f"comma list of release names (CUDA: {','.join(FAMILIES)}; CPU: flux_v1.5)")
    ap.add_argument("--sizes", default=None, help="comma list of S or HxW output sizes "
                    f"(CUDA: {','.join(GPU_SIZES)}; CPU: {','.join(CPU_SIZES)})")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up decodes (CUDA 2, CPU 1)")
    ap.add_argument("--repeat", type=int, default=None, help="timed decodes (CUDA 5, CPU 2)")
    ap.add_argument("--tile", default="none", help="none | auto | side in px (tiled decode)")
    ap.add_argument("--budget-gb", type=float, default=None, help="memory budget for --tile auto")
    ap.add_argument("--noise-device", default="cpu", choices=("cpu", "device"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the network")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak (TFLOP/s)")
    ap.add_argument("--reference-dir", default=None, help="checkout of nv-tlabs/PiD to compare with")
    ap.add_argument("--out", default="bench/results/decode",
                    help="output prefix for .csv and .md (bench/results/ is git-ignored)")
    args = ap.parse_args(argv)

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtypes = (args.dtypes or ("bf16" if cuda else "fp32,bf16")).split(",")
    families = (args.families or (",".join(FAMILIES) if cuda else "flux_v1.5")).split(",")
    sizes = [parse_size(s) for s in (args.sizes or ",".join(GPU_SIZES if cuda else CPU_SIZES)).split(",")]
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    repeat = args.repeat if args.repeat is not None else (5 if cuda else 2)
    tile = None if args.tile == "none" else "auto" if args.tile == "auto" else int(args.tile)
    budget = None if args.budget_gb is None else int(args.budget_gb * 1e9)
    dev_name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops or (gpu_peak(dev_name) if cuda else None)
    PidNet = import_reference(args.reference_dir) if args.reference_dir else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as upstream's loader; bf16 runs are unaffected
        torch.backends.cudnn.allow_tf32 = True

    print(f"# PiD decode benchmark on {dev_name}, torch {torch.__version__}, {args.steps} steps, "
          f"batch {args.batch}, warm-up {warmup}, median of {repeat}"
          + (f", bf16 peak {peak:.0f} TFLOP/s" if peak else ""), flush=True)
    rows = []
    for fam in families:
        rel = RELEASES_BY_NAME[fam]
        cfg = rel.config
        t0 = time.perf_counter()
        sd = random_state_dict(cfg, seed=0, dtype=torch.bfloat16)
        print(f"[{fam}] random weights in {time.perf_counter() - t0:.0f} s", flush=True)
        for dname in dtypes:
            dec = unbounded(load_decoder(sd, device=dev, dtype=dname, compile="default" if args.compile else None))
            dtype = dec.net.s_embedder.proj.weight.dtype
            for (h, w) in sizes:
                f = cfg.output_factor
                if h % f or w % f:
                    print(f"[{fam}] skip {h}x{w}: not a multiple of the output factor {f}")
                    continue
                gen = torch.Generator().manual_seed(1)
                z = torch.randn(args.batch, cfg.latent_channels, h // f, w // f, generator=gen).to(dev)
                y = torch.randn(args.batch, cfg.text_tokens, cfg.text_dim, generator=gen).to(dev)
                plan = dec.plan(z.shape, None, tile, memory_budget_bytes=budget)
                est = estimate_memory(cfg, h, w, args.batch, dtype).total / GiB if not plan.tiled \
                    else plan.estimate.total / GiB

                def run():
                    return dec.decode(z, 0.0, y, latent_format="normalized", steps=args.steps, seed=0, plan=plan,
                                      options=DecodeOptions(noise_device=args.noise_device))

                try:
                    med, times = timed(run, dev, warmup, repeat)
                    alloc, reserved = mem_peaks(dev)
                    status = "ok"
                except torch.OutOfMemoryError:
                    med, times, alloc, reserved, status = float("nan"), [], None, None, "OOM"
                free(dev)
                flops = sum(decode_flops(cfg, t.h, t.w, args.batch, args.steps) for t in plan.tiles)
                tflops = flops / med / 1e12 if status == "ok" else float("nan")
                row = dict(device=dev_name, family=fam, dtype=dname, size=f"{h}x{w}", batch=args.batch,
                           steps=args.steps, plan=plan.describe(), status=status,
                           decode_s=med, step_s=med / args.steps, all_s=";".join(f"{t:.4f}" for t in times),
                           peak_alloc_gib=alloc, peak_reserved_gib=reserved, estimate_gib=est,
                           tflop=flops / 1e12, tflops=tflops,
                           peak_fraction=(tflops / peak) if peak and status == "ok" else None)
                if PidNet is not None:
                    row.update(reference(PidNet, cfg, sd, dec, dev, z, y, (h, w), args, warmup, repeat,
                                         dname, med))
                rows.append(row)
                print(fmt_row(row), flush=True)
            dec = None
            free(dev)
        sd = None
    write(rows, args.out)
    return 0


def reference(PidNet, cfg, sd, dec, dev, z, y, size, args, warmup, repeat, dname, ours_s) -> dict:
    """Time upstream PidNet on the same weights and inputs (our decoder moved off the device)."""
    dec.net.to("cpu")
    free(dev)
    out = {}
    try:
        net = build_reference(PidNet, cfg, sd, dev)
        sigma = torch.zeros(z.shape[0], device=dev)
        ac = torch.bfloat16 if dname == "bf16" else None
        zr = z.float()
        med, _ = timed(lambda: reference_decode(net, zr, y.float(), sigma, size, args.steps, 0, dev, ac),
                       dev, warmup, repeat)
        alloc, reserved = mem_peaks(dev)
        out = dict(ref_decode_s=med, ref_peak_alloc_gib=alloc, ref_peak_reserved_gib=reserved,
                   speedup_vs_ref=med / ours_s if ours_s == ours_s else None)
        # Same seed, same generator kind (noise_device="device"): the two images must agree
        # up to the dtype's rounding (the upstream-parity check at full size).
        ref_img = (reference_decode(net, zr, y.float(), sigma, size, args.steps, 0, dev, ac).float() + 1) / 2
        net = None
        free(dev)
        dec.net.to(dev)
        ours = dec.decode(z, 0.0, y, latent_format="normalized", steps=args.steps, seed=0,
                          options=DecodeOptions(noise_device="device")).float()
        diff = (ours - ref_img).abs()
        out.update(ref_max_abs_diff=float(diff.max()), ref_mean_abs_diff=float(diff.mean()))
        del ours, ref_img, diff
    except torch.OutOfMemoryError:
        out = dict(ref_decode_s=float("nan"), speedup_vs_ref=None)
    free(dev)
    dec.net.to(dev)  # no-op when already back
    return out


def _f(v, spec):
    return "-" if v is None or v != v else format(v, spec)


def fmt_row(r: dict) -> str:
    s = (f"{r['family']:12s} {r['dtype']:5s} {r['size']:>10s}  {r['status']:3s}  "
         f"{_f(r['decode_s'], '.3f')} s/decode  {_f(r['step_s'], '.3f')} s/step  "
         f"peak {_f(r['peak_alloc_gib'], '.2f')}/{_f(r['peak_reserved_gib'], '.2f')} GiB "
         f"(est {_f(r['estimate_gib'], '.2f')})  {_f(r['tflops'], '.1f')} TFLOP/s"
         + (f" ({r['peak_fraction'] * 100:.0f}% of peak)" if r.get("peak_fraction") else ""))
    if "ref_decode_s" in r:
        s += (f"  | upstream {_f(r['ref_decode_s'], '.3f')} s ({_f(r.get('speedup_vs_ref'), '.2f')}x), "
              f"image diff max {_f(r.get('ref_max_abs_diff'), '.4f')} "
              f"mean {_f(r.get('ref_mean_abs_diff'), '.5f')}")
    return s


def write(rows: list[dict], prefix: str) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{prefix}.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    ref = any("ref_decode_s" in r for r in rows)
    head = ["net", "dtype", "output", "plan", "s / decode", "s / step", "peak alloc / reserved GiB",
            "estimate GiB", "TFLOP", "TFLOP/s", "% of bf16 peak"] + (
        ["upstream s / decode", "speed-up"] if ref else [])
    lines = [f"Device: {rows[0]['device']}; {rows[0]['steps']} steps, batch {rows[0]['batch']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["family"], r["dtype"], r["size"], r["plan"].split(" (")[0], _f(r["decode_s"], ".3f"),
                 _f(r["step_s"], ".3f"),
                 f"{_f(r['peak_alloc_gib'], '.2f')} / {_f(r['peak_reserved_gib'], '.2f')}",
                 _f(r["estimate_gib"], ".2f"), _f(r["tflop"], ".1f"), _f(r["tflops"], ".2f"),
                 _f(None if r.get("peak_fraction") is None else 100 * r["peak_fraction"], ".0f")]
        if ref:
            cells += [_f(r.get("ref_decode_s"), ".3f"), _f(r.get("speedup_vs_ref"), ".2f") + "x"]
        lines.append("| " + " | ".join(cells) + " |")
    Path(f"{prefix}.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    print(f"\nwrote {prefix}.csv and {prefix}.md")


if __name__ == "__main__":
    raise SystemExit(main())
