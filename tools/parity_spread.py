"""How far our network is from the upstream parity fixtures on this CPU, per kernel set.

For every fixture in tests/fixtures it measures, in units of the fixture output's scale
(``max|ref|``) times fp32's machine epsilon (2^-23), the largest absolute difference of:

* ``fp32``: our fp32 forward vs upstream's fp32 output (what tests/test_parity.py checks);
* ``fp64``: our forward with float64 weights and inputs vs upstream's fp32 output (the
  fixture's own rounding; nearly the same on every CPU);
* ``fp32-fp64``: our fp32 forward vs our float64 forward (this machine's fp32 rounding);
* the intermediates and the 4-step sampler of tests/test_parity.py.

It runs itself once per ``ATEN_CPU_CAPABILITY`` (default, avx2, avx512 where the CPU has it)
and thread count (1, 2), in fresh processes, and prints one table.

    python tools/parity_spread.py            # the table
    python tools/parity_spread.py --json F   # also write every figure to F
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
NAMES = ("flux_2k", "flux2_2k", "flux_v1pt5", "flux2_v1pt5")
EPS32 = 2.0 ** -23


def _measure() -> dict:
    import torch
    from safetensors.torch import load_file

    from pid_core.decoding.sampler import sample, t_schedule, velocity_to_x0
    from pid_core.network.config import from_upstream_kwargs
    from pid_core.network.model import PiDNet

    def ulps(a, b, scale):
        return float((a.double() - b.double()).abs().max()) / (EPS32 * scale)

    out = {}
    for name in NAMES:
        meta = json.loads((FIXTURES / f"pid_parity_{name}.json").read_text())
        t = {k: v.clone() for k, v in load_file(str(FIXTURES / f"pid_parity_{name}.safetensors")).items()}
        net = PiDNet(from_upstream_kwargs(meta["pidnet_kwargs"])).eval()
        net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")}, strict=True)
        args = [t[k] for k in ("input.x_t", "input.timestep", "input.context", "input.lq_latent",
                               "input.degrade_sigma")]
        ref = t["output.v"]
        scale = float(ref.abs().max())
        with torch.no_grad():
            v32 = net(*args)
            v64 = net.double()(*[a.double() for a in args])
            net.float()
            row = {"scale": scale, "fp32": ulps(v32, ref, scale), "fp64": ulps(v64, ref, scale),
                   "fp32-fp64": ulps(v32, v64, scale)}
            inter = [(net.t_embedder(t["input.timestep"]), t["debug.t_embedder_out"]),
                     (net.y_embedder(t["input.context"]), t["debug.y_embedder_out"])]
            feats = net.lq_proj(t["input.lq_latent"], net.grid_for(t["input.x_t"]))
            inter += [(f, t[f"debug.lq_proj_out.{i}"]) for i, f in enumerate(feats)]
            row["intermediates"] = max(ulps(a, b, float(b.abs().max())) for a, b in inter)
            y, z, s = t["input.context"][1:2], t["input.lq_latent"][1:2], t["input.degrade_sigma"][1:2]
            tokens = net.lq_proj.encode(z, net.grid_for(t["sampler.noise"]))

            def x0(x, tc):
                return velocity_to_x0(x, tc, net.velocity(x, torch.full((1,), tc) * 1000, y, tokens, s))

            draws = iter([t["sampler.noise"]] + [t[f"sampler.eps.{k}"] for k in range(3)])
            got = sample(x0, type("N", (), {"next": lambda self, into=None: next(draws).clone()})(),
                         t_schedule(4))
            ref_s = t["sampler.output"]
            row["sampler"] = ulps(got, ref_s, float(ref_s.abs().max()))
        out[name] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure()))
        return 0
    import torch
    caps = ["default", "avx2"] + (["avx512"] if "AVX512" in torch.backends.cpu.get_cpu_capability() else [])
    results = {}
    for cap in caps:
        for threads in (1, 2):
            env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "OMP_NUM_THREADS": str(threads),
                   "PYTHONPATH": str(ROOT)}
            res = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"measuring with {cap}, {threads} thread(s) failed:\n{res.stderr}")
            results[f"{cap}/{threads}t"] = json.loads(res.stdout.strip().splitlines()[-1])
    cols = ("fp32", "fp64", "fp32-fp64", "intermediates", "sampler")
    print("max |difference| in units of eps32 x max|reference| (eps32 = 2^-23)")
    print(f"{'fixture':<12} {'kernels':<12} {'scale':>7} " + " ".join(f"{c:>13}" for c in cols))
    for name in NAMES:
        for key, res in results.items():
            r = res[name]
            print(f"{name:<12} {key:<12} {r['scale']:7.3f} " + " ".join(f"{r[c]:13.2f}" for c in cols))
    worst = {c: max(res[n][c] for res in results.values() for n in NAMES) for c in cols}
    print("worst        " + " " * 20 + " ".join(f"{worst[c]:13.2f}" for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
