"""Run every shipped workflow end to end in a real ComfyUI with stand-in models (not part of CI).

    COMFY_HOSTENV=~/.cache/comfy_host_v033 python3 tools/host_e2e.py [--size 256] [--port 8211]

1. builds/caches the stand-in models in the host's own venv (tools/host_fixtures.py);
2. serves this pack plus the test-only probe pack (tools/host_probe) with ../shared/tools/comfy_host.py;
3. for every workflow in workflows/: converts it to API format with the server's /object_info, sets
   the empty latents to --size px (CPU), adds a probe node beside each PiD Stop Sigma
   (tools/host_graph.py), runs it, and reads back what the probe and the PiD Decode Latent wrapper
   recorded: the sigma ComfyUI's KSampler stopped at vs PiD Stop Sigma's, and whether the LATENT PiD
   decoded is the one the sampler returned;
4. prints one line per workflow and ``N/N workflows succeeded``. Workflows this ComfyUI cannot run
   (core nodes, CLIP types or model families it lacks) are reported as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import host_graph

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("COMFY_HOST_TOOL", ROOT.parent / "shared" / "tools" / "comfy_host.py"))
HOSTENV = Path(os.environ.get("COMFY_HOSTENV", Path.home() / ".cache" / "comfy_host")).expanduser()
CACHE = Path(os.environ.get("PID_HOST_MODELS", Path.home() / ".cache" / "pid_host_models"))
SIGMA_TOL = 1e-6
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}


def harness(*args, check=True, capture=True):
    cmd = [sys.executable, str(HARNESS), *args]
    out = subprocess.run(cmd, capture_output=capture, text=True, env=dict(os.environ, COMFY_HOSTENV=str(HOSTENV)))
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def http(port, path, data=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as r:
        body = r.read()
    return json.loads(body) if body.strip() else None


def comfy_version() -> str:
    text = (HOSTENV / "ComfyUI" / "comfyui_version.py").read_text()
    return text.split('"')[1] if '"' in text else text.strip()


def state_dir() -> Path:
    """comfy_host.py's state dir (one port-N/ per server, with its workdir and server.log)."""
    return Path(os.environ.get("COMFY_HOST_STATE") or Path(os.environ.get("TMPDIR") or "/tmp") / "comfy_host")


def serve_args(out: Path, port: int, probe: bool = False, extra_args: str | None = None) -> list:
    """comfy_host.py ``serve`` arguments: this pack (and the probe pack) on the stand-ins in ``out``."""
    args = ["serve", "--pack", str(ROOT), "--name", "ComfyUI-PiD"]
    if probe:
        args += ["--pack", str(ROOT / "tools" / "host_probe"), "--name", "pid_host_probe"]
    args += ["--models", str(out / "models"), "--port", str(port)]
    if extra_args:
        args += ["--extra-args", extra_args]
    for f in sorted((out / "input").glob("*")):
        args += ["--input-file", str(f)]
    return args


def build_standins(out: Path, only) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HOSTENV / "ComfyUI"), PID_HOST_MODELS=str(CACHE))
    t0 = time.time()
    cmd = [str(HOSTENV / "venv" / "bin" / "python"), str(ROOT / "tools" / "host_fixtures.py"), str(out)]
    subprocess.run(cmd + (["--only", *only] if only else []), check=True, env=env, cwd=ROOT)
    print(f"stand-ins ready in {time.time() - t0:.0f}s: {out}")
    return json.loads((out / "manifest.json").read_text())


def missing_on_host(api: dict, ui: dict, object_info: dict) -> list:
    """Core node types and combo values of the workflow that this ComfyUI does not offer. The pack's
    own nodes never count: one missing is the pack's failure, which the run must report, not skip."""
    missing = sorted(t for t in host_graph.node_types(ui)
                     if t not in object_info and t not in FRONTEND_ONLY and not t.startswith("PiD_"))
    if missing or api is None:
        return [f"no node type {t} in this ComfyUI" for t in missing]
    out = []
    for node in api.values():
        spec = object_info.get(node["class_type"], {}).get("input", {})
        specs = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            choices = specs.get(name, [None])[0]
            if isinstance(value, str) and isinstance(choices, list) and choices and value not in choices:
                if name in ("type", "weight_dtype", "sampler_name", "scheduler"):
                    out.append(f"{node['class_type']}.{name} has no '{value}'")
    return out


def server_log_lines(log: Path, start: int) -> list:
    data = log.read_bytes()[start:].decode("utf-8", "replace")
    return [ln for ln in data.splitlines() if " missing" in ln.lower() or "left over keys" in ln.lower()]


def judge(result: dict, records: list, probes: list) -> tuple:
    """(status, sigma column, latent column, problems)."""
    problems = []
    if result.get("status") != "success":
        err = result.get("error") or {}
        msg = (err.get("exception_message") or str(result.get("node_errors") or ""))[:300]
        return result.get("status", "?").upper(), "-", "-", [f"{err.get('node_type', '')}: {msg}".strip()]
    samp = [r for r in records if r.get("probe") == "sampler"]
    decs = [r for r in records if r.get("probe") == "decode_input"]
    sigma_col = latent_col = "-"
    if probes:
        if len(samp) != len(probes):
            problems.append(f"{len(samp)} probe records for {len(probes)} probes")
        for r in samp:
            sigma_col = f"pid {r['pid_sigma']:.6f} / ksampler {r['sampler_sigma']:.6f} (|d| {r['abs_diff']:.1e})"
            if r["abs_diff"] > SIGMA_TOL:
                problems.append(f"sigma differs by {r['abs_diff']:.3g}")
            same = [d for d in decs if d.get("latent", {}).get("sha256") == r.get("latent", {}).get("sha256")]
            latent_col = "same" if same else "DIFFERENT"
            if not same:
                problems.append("PiD Decode Latent did not receive the sampler's LATENT")
            if not r.get("latent", {}).get("finite", False):
                problems.append("the sampler's latent is not finite")
    return ("SUCCESS" if not problems else "FAIL"), sigma_col, latent_col, problems


def prepare(path: Path, port: int, object_info: dict, manifest: dict, size: int):
    """The API prompts to run for one workflow ([(label, api)]), or a skip reason."""
    ui = json.loads(path.read_text())
    absent = missing_on_host(None, ui, object_info)
    if absent:
        return "; ".join(absent)
    if path.stem in manifest.get("unsupported", {}):
        return "; ".join(manifest["unsupported"][path.stem])
    with tempfile.TemporaryDirectory() as tmp:
        api_path = Path(tmp) / "api.json"
        harness("convert", str(path), "--port", str(port), "-o", str(api_path))
        api = json.loads(api_path.read_text())
    absent = missing_on_host(api, ui, object_info)
    if absent:
        return "; ".join(absent)
    host_graph.shrink(api, size)
    runs = [(path.stem, api)]
    variant = host_graph.early_stop_variant(api)
    if variant:  # a finished latent has sigma 0: also prove a real stop of the same family
        runs.append((f"{path.stem} ({variant[1]})", variant[0]))
    return runs


def run_one(name: str, api: dict, port: int, timeout: int, log: Path) -> dict:
    probes = host_graph.add_probes(api)
    with tempfile.TemporaryDirectory() as tmp:
        api_path, res_path = Path(tmp) / "api.json", Path(tmp) / "result.json"
        api_path.write_text(json.dumps(api, indent=1))
        http(port, "/pid_probe/clear", data=b"{}")
        start = log.stat().st_size
        t0 = time.time()
        harness("run", str(api_path), "--port", str(port), "--timeout", str(timeout), "--json-out", str(res_path),
                check=False)
        wall = time.time() - t0
        result = json.loads(res_path.read_text()) if res_path.exists() else {"status": "harness-error"}
    try:
        records = http(port, "/pid_probe/records")
    except OSError:  # the server is gone (on this shared machine: the kernel's OOM killer)
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-2:]
        return {"name": name, "status": "SERVER-DIED", "seconds": time.time() - t0, "output": "-", "sigma": "-",
                "latent": "-", "why": f"ComfyUI exited during the run (out of memory?); log ends {tail}",
                "records": [], "log_warnings": []}
    status, sigma_col, latent_col, problems = judge(result, records, probes)
    images = [o for o in result.get("outputs", []) if o.get("width")]
    out = f"{images[0]['width']}x{images[0]['height']} {images[0]['bytes'] // 1024} KiB" if images else "-"
    return {"name": name, "status": status, "seconds": result.get("exec_s") or wall, "output": out,
            "sigma": sigma_col, "latent": latent_col, "why": "; ".join(problems), "records": records,
            "node_times": result.get("node_times"), "log_warnings": server_log_lines(log, start)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8211)
    ap.add_argument("--size", type=int, default=256, help="LDM image size for the empty latents (px)")
    ap.add_argument("--timeout", type=int, default=3600, help="per workflow (s)")
    ap.add_argument("--only", nargs="*", help="workflow stems (default: all in workflows/)")
    ap.add_argument("--json-out", type=Path, help="write every row (with the probe records) here")
    args = ap.parse_args(argv)
    version = comfy_version()
    out = CACHE / f"run-{version}"
    manifest = build_standins(out, args.only)
    serve = serve_args(out, args.port, probe=True)
    served = harness(*serve)
    print(served.stdout.strip())
    log = state_dir() / f"port-{args.port}" / "server.log"
    rows = []
    try:
        object_info = http(args.port, "/object_info")
        for path in sorted((ROOT / "workflows").glob("*.json")):
            if args.only and path.stem not in args.only:
                continue
            runs = prepare(path, args.port, object_info, manifest, args.size)
            if isinstance(runs, str):
                rows.append({"name": path.stem, "status": "SKIPPED", "why": runs})
                print_row(rows[-1], flush=True)
                continue
            for name, api in runs:
                rows.append(run_one(name, api, args.port, args.timeout, log))
                if rows[-1]["status"] == "SERVER-DIED":
                    print_row(rows[-1], flush=True)
                    harness("stop", "--port", str(args.port), check=False)
                    harness(*serve)
                    continue
                print_row(rows[-1], flush=True)
                http(args.port, "/free", data=json.dumps({"unload_models": True, "free_memory": True}).encode())
    finally:
        harness("stop", "--port", str(args.port), check=False)
    if args.json_out:
        args.json_out.write_text(json.dumps({"comfyui": version, "size": args.size, "rows": rows}, indent=1))
    workflows = {r["name"].split(" ")[0] for r in rows}
    skipped = {r["name"] for r in rows if r["status"] == "SKIPPED"}
    failed = {r["name"].split(" ")[0] for r in rows if r["status"] not in ("SUCCESS", "SKIPPED")}
    ran = workflows - skipped
    print(f"ComfyUI {version}: {len(ran - failed)}/{len(ran)} workflows succeeded"
          + (f" ({len(skipped)} skipped on this ComfyUI)" if skipped else ""))
    return 0 if not failed else 1


def print_row(row: dict, flush=False) -> None:
    if row["status"] == "SKIPPED":
        print(f"{row['name']:34s} SKIPPED  {row['why']}", flush=flush)
        return
    print(f"{row['name']:34s} {row['status']:8s} {row['seconds']:7.1f}s  {row['output']:18s} "
          f"sigma {row['sigma']}  latent {row['latent']}" + (f"  !! {row['why']}" if row["why"] else ""), flush=flush)
    for line in row.get("log_warnings", [])[:3]:
        print(f"{'':34s} server log: {line[:160]}", flush=flush)


if __name__ == "__main__":
    sys.exit(main())
