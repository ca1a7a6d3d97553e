"""One-shot GPU check: every figure the README's GPU table needs, in one command of at most ~8 minutes.

FLUX v1.5 and FLUX 2k nets with random weights (speed and memory do not depend on the values),
bf16, 4 steps, batch 1: 1024^2, 2048^2, 4096^2, 2304x4096 whole and 8192^2 tiled under a memory
budget; eager and ``torch.compile``d; noise drawn on the CPU vs on the device; with ``--upstream DIR``
upstream's PidNet side by side on the same weights. Per case: s/decode, s/step, peak allocated and
reserved memory vs the estimator's prediction, TFLOP/s and its share of the device's bf16 peak.
Cases run in priority order and stop starting new ones once ``--time-limit`` is spent (skipped ones
are listed). Writes ``gpu_check.md``, ``.csv`` and ``.json`` into ``--out``.

    python -m bench.gpu_check --out $OUT [--upstream DIR] [--tests]   # on a GPU
    python -m bench.gpu_check --dry-run --out /tmp/x                   # the same plan, tiny, on the CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import unbounded
from bench.bench_decode import (
    BF16_PEAK,
    build_reference,
    free,
    gpu_peak,
    import_reference,
    mem_peaks,
    reference_decode,
    timed,
)
from pid_core.decoding.decoder import DecodeOptions, PiDDecoder, load_decoder
from pid_core.network.config import RELEASES_BY_NAME
from pid_core.network.flops import decode_flops
from pid_core.network.random_weights import random_state_dict, tiny_config

GiB = 1 << 30
STEPS = 4


@dataclass
class Case:
    """One measurement; ``size`` in px at full scale (the dry run divides it)."""

    family: str
    size: tuple[int, int]
    compiled: bool = False
    noise: str = "cpu"
    tiled_budget_gb: float | None = None
    upstream: bool = False
    result: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        h, w = self.size
        parts = [self.family, f"{h}x{w}", "compiled" if self.compiled else "eager", f"noise {self.noise}"]
        if self.tiled_budget_gb:
            parts.append(f"tiled, budget {self.tiled_budget_gb:g} GB")
        return ", ".join(parts) + (", upstream side by side" if self.upstream else "")


def plan_cases(budget_gb: float, upstream: bool) -> list[Case]:
    """Every case, the most wanted first (the headline 2048^2 compiled figure among the first)."""
    v15, v1 = "flux_v1.5", "flux_2k"
    cases = [Case(v15, (2048, 2048)), Case(v15, (2048, 2048), compiled=True), Case(v15, (4096, 4096)),
             Case(v15, (4096, 4096), compiled=True), Case(v15, (1024, 1024)), Case(v15, (2304, 4096)),
             Case(v15, (2048, 2048), noise="device"), Case(v15, (8192, 8192), tiled_budget_gb=budget_gb)]
    if upstream:
        cases += [Case(v15, (2048, 2048), upstream=True), Case(v15, (4096, 4096), upstream=True)]
    cases += [Case(v1, (1024, 1024)), Case(v1, (2048, 2048)), Case(v1, (2048, 2048), compiled=True),
              Case(v1, (4096, 4096)), Case(v15, (1024, 1024), compiled=True),
              Case(v15, (2304, 4096), compiled=True), Case(v15, (4096, 4096), noise="device")]
    return cases


class Runner:
    def __init__(self, args):
        self.args, self.dry = args, args.dry_run
        self.dev = torch.device("cpu" if self.dry else args.device)
        self.scale = 16 if self.dry else 1                 # the dry run: 1/16 of every side
        self.nets: dict[str, tuple] = {}
        self.reference = import_reference(args.upstream) if args.upstream else None
        cuda = self.dev.type == "cuda"
        self.device_name = torch.cuda.get_device_name(self.dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
        self.peak = args.peak_tflops or (gpu_peak(self.device_name) if cuda else None)

    def decoders(self, family: str):
        """(state dict, eager decoder, compiled decoder) of a family, made once."""
        if family not in self.nets:
            cfg = tiny_config(family) if self.dry else RELEASES_BY_NAME[family].config
            sd = random_state_dict(cfg, seed=0, dtype=torch.bfloat16)
            eager = unbounded(load_decoder(sd, device=self.dev, dtype="bf16"))
            compiled = unbounded(PiDDecoder(eager.net, eager.info))
            compiled.compile = "default"
            if self.dry:    # dynamo's graph without code generation: the same path, in seconds
                compiled.network = _eager_backend(eager.net.velocity)
            else:
                from pid_core.decoding.compile import CompiledNetwork
                compiled.network = CompiledNetwork(eager.net.velocity, "default")
            self.nets[family] = (sd, eager, compiled)
        return self.nets[family]

    def run(self, case: Case) -> dict:
        sd, eager, compiled = self.decoders(case.family)
        dec = compiled if case.compiled else eager
        cfg, f = dec.net.cfg, dec.info.output_factor
        h, w = (max(f, s // self.scale // f * f) for s in case.size)
        g = torch.Generator().manual_seed(1)
        z = torch.randn(1, cfg.latent_channels, h // f, w // f, generator=g)
        y = torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=g)
        budget = None if case.tiled_budget_gb is None else int(case.tiled_budget_gb * 1e9 / self.scale ** 2)
        tile = "auto" if budget else None
        plan = dec.plan(z.shape, tile=tile, memory_budget_bytes=budget)
        options = DecodeOptions(noise_device=case.noise)

        def decode():
            return dec.decode(z, 0.0, y, latent_format="normalized", steps=STEPS, plan=plan, options=options)

        first, med, times = self.measure(decode)
        alloc, reserved = mem_peaks(self.dev)
        flops = sum(decode_flops(cfg, t.h, t.w, 1, STEPS) for t in plan.tiles)
        out = dict(case=case.name, size=f"{h}x{w}", plan=plan.describe(), first_s=first, decode_s=med,
                   step_s=med / STEPS, all_s=[round(t, 4) for t in times], peak_alloc_gib=alloc,
                   peak_reserved_gib=reserved,
                   estimate_gib=plan.estimate.total / GiB, tflops=flops / med / 1e12,
                   peak_fraction=flops / med / 1e12 / self.peak if self.peak else None)
        if case.upstream:
            out.update(self.upstream(cfg, sd, dec, z, y, (h, w), med))
        free(self.dev)
        return out

    def measure(self, fn) -> tuple[float, float, list[float]]:
        """(first call s, median s, every timed s): the first call (warm-up and compile) timed alone,
        then ``--repeat`` more with fresh memory peaks; with ``--repeat 0`` the first call is the figure."""
        first = timed(fn, self.dev, 0, 1)[0]
        if not self.args.repeat:
            return first, first, [first]
        med, times = timed(fn, self.dev, 0, self.args.repeat)
        return first, med, times

    def upstream(self, cfg, sd, dec, z, y, size, ours_s) -> dict:
        """Upstream's PidNet on the same weights, run as upstream runs it (bench.bench_decode)."""
        dec.net.to("cpu")
        free(self.dev)
        try:
            net = build_reference(self.reference, cfg, sd, self.dev)
            zr, yr = z.float().to(self.dev), y.float().to(self.dev)
            sigma = torch.zeros(1, device=self.dev)
            ac = torch.bfloat16 if self.dev.type == "cuda" else None
            _, ref, _ = self.measure(lambda: reference_decode(net, zr, yr, sigma, size, STEPS, 0, self.dev, ac))
            alloc, _ = mem_peaks(self.dev)
            return dict(upstream_decode_s=ref, upstream_peak_alloc_gib=alloc, speedup_vs_upstream=ref / ours_s)
        finally:
            net = None
            free(self.dev)
            dec.net.to(self.dev)


def _eager_backend(network):
    compiled = torch.compile(network, dynamic=False, fullgraph=True, backend="eager")
    return lambda *a: compiled(*a)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def write(results: list[dict], skipped: list[str], runner: Runner, out: Path, seconds: float) -> str:
    out.mkdir(parents=True, exist_ok=True)
    timing = (f"median of {runner.args.repeat} after one warm-up" if runner.args.repeat else
              "one decode per case") + (" (dry run: tiny nets, 1/16 sides)" if runner.dry else "")
    head = (f"# PiD GPU check: {runner.device_name}, torch {torch.__version__}, bf16, {STEPS} steps, batch 1, "
            f"{timing}; {seconds:.0f} s in all\n\n")
    lines = ["| case | plan | first decode s | s/decode | s/step | peak alloc / reserved GiB | estimate GiB "
             "| TFLOP/s | of bf16 peak | upstream s/decode | speed-up |", "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r['case']} | {r.get('plan', '-')} | {_fmt(r.get('first_s'), '.2f')} "
            f"| {_fmt(r.get('decode_s'), '.3f')} | {_fmt(r.get('step_s'), '.3f')} "
            f"| {_fmt(r.get('peak_alloc_gib'), '.2f')} / "
            f"{_fmt(r.get('peak_reserved_gib'), '.2f')} | {_fmt(r.get('estimate_gib'), '.2f')} "
            f"| {_fmt(r.get('tflops'), '.1f')} | {_fmt(r.get('peak_fraction'), '.0%')} "
            f"| {_fmt(r.get('upstream_decode_s'), '.3f')} | {_fmt(r.get('speedup_vs_upstream'), '.2f')} |"
            if "error" not in r else f"| {r['case']} | {r['error']} |" + " - |" * 9)
    text = head + "\n".join(lines) + ("\n\nskipped (time limit): " + "; ".join(skipped) if skipped else "") + "\n"
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps({"device": runner.device_name, "torch": torch.__version__,
                                                    "results": results, "skipped": skipped}, indent=1))
    keys = sorted({k for r in results for k in r})
    with open(out / "gpu_check.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(results)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="bench/results/gpu_check", help="folder for gpu_check.{md,csv,json}")
    ap.add_argument("--upstream", default=None, help="checkout of nv-tlabs/PiD: PidNet side by side")
    ap.add_argument("--budget-gb", type=float, default=8.0, help="memory budget of the tiled 8192^2 case")
    ap.add_argument("--repeat", type=int, default=3, help="timed decodes per case (median)")
    ap.add_argument("--time-limit", type=float, default=420.0, help="start no case after this many seconds")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"device bf16 peak; default from its name ({', '.join(n for n, _ in BF16_PEAK[:4])}, ...)")
    ap.add_argument("--tests", action="store_true", help="also run the GPU-marked tests (pytest -m gpu)")
    ap.add_argument("--dry-run", action="store_true", help="the same plan on the CPU with tiny nets and sizes")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run to check the plan on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:   # the plan, not the timing: each case decodes once
        args.repeat = 0
    torch.backends.cuda.matmul.allow_tf32 = True      # as upstream's loader (bf16 runs are unaffected)
    start, runner = time.perf_counter(), Runner(args)
    results, skipped = [], []
    for case in plan_cases(args.budget_gb, args.upstream is not None):
        if time.perf_counter() - start > args.time_limit:
            skipped.append(case.name)
            continue
        try:
            r = runner.run(case)
        except torch.OutOfMemoryError as exc:
            r = dict(case=case.name, error=f"out of memory ({str(exc).splitlines()[0][:120]})")
            free(runner.dev)
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.tests:
        log = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
                             capture_output=True, text=True)
        (Path(args.out)).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pytest_gpu.log").write_text(log.stdout + log.stderr)
        print("GPU-marked tests:", (log.stdout.strip().splitlines() or ["no output"])[-1], flush=True)
    print(write(results, skipped, runner, Path(args.out), time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
