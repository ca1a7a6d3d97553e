"""A long session in a real ComfyUI: many prompts, interrupts and checkpoint switches (not CI).

    COMFY_HOSTENV=~/.cache/comfy_host_v033 python3 tools/host_soak.py [--prompts 100] [--port 8233]

Serves the pack on the stand-in models of ``tools/host_e2e.py`` (loopback only), with a second name
for the tiny PiD file so that PiD Load Model really loads another checkpoint, and submits the
saved-latent and upscale workflows in turn as the frontend would (websocket + ``POST /prompt``):
the prompt text (a few recurring texts, so the prompt-feature cache both hits and misses) and the
seed change every time, the checkpoint every 10 prompts, and about one prompt in five is
interrupted (``POST /interrupt``) as soon as PiD's node reports progress. Prints one line per
prompt and reports the server's RSS after the warm-up (the first 20 prompts, or half of fewer) and at the end, with
every finished prompt's image size, every interrupted prompt's status and a last plain decode that
must succeed. Bounded by ``--prompts`` and ``--time-limit``. Exit 0 when every finished prompt wrote
its image, every interrupted one ended as interrupted, the last decode succeeded and RSS grew by at
most ``--max-growth`` (5 %).
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

import host_decode_check
import host_e2e
from host_e2e import harness, http

WORKFLOWS = {"saved": "pid_decode_saved_latent", "upscale": "pid_upscale_2k_to_4k"}
TEXTS = ["A red fox in fresh snow at dawn", "An old lighthouse at sunset", "", "Macro photo of a dragonfly",
         "A rainy street at night, neon reflections", "Portrait of an elderly fisherman"]
SECOND_NAME = "pid_1.5_flux1_1024_to_4096_4step_bf16_soak_copy.safetensors"
WARMUP = 20


def soak_models(out: Path, tmp: Path) -> tuple[Path, str]:
    """The stand-ins' folders, linked, plus a second name for the PiD file; returns (dir, pid name)."""
    root = tmp / "soak"
    first = None
    for folder in ("models", "input"):
        for f in (out / folder).rglob("*"):
            if f.is_file() or f.is_symlink():
                dest = root / folder / f.relative_to(out / folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f.resolve())
                if folder == "models" and f.name.startswith("pid_") and f.parent.name in ("pid", "diffusion_models"):
                    first = dest
    (first.parent / SECOND_NAME).symlink_to(first.resolve())
    return root, first.name


def prompts(port: int) -> dict:
    """Both workflows as API prompts, made quick: PiD at 1 step, small outputs."""
    apis = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, stem in WORKFLOWS.items():
            out = Path(tmp) / "api.json"
            harness("convert", str(host_e2e.ROOT / "workflows" / f"{stem}.json"), "--port", str(port), "-o", str(out))
            api = json.loads(out.read_text())
            for node in api.values():
                if node["class_type"] == "PiD_DecodeLatent":
                    node["inputs"].update(steps=1, output_long_side=512)
                if node["class_type"] == "PiD_Upscale2Kto4K":
                    node["inputs"].update(steps=1, long_side=1024)
            apis[key] = api
    return apis


def rss_bytes(port: int) -> int:
    state = json.loads((host_e2e.state_dir() / f"port-{port}" / "state.json").read_text())
    with open(f"/proc/{state['pid']}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def submit(ws_class, port: int, api: dict, interrupt: bool, timeout: float) -> dict:
    """Run one prompt; with ``interrupt``, POST /interrupt at PiD's first progress report."""
    client = uuid.uuid4().hex
    ws = ws_class(port, client)
    pid_nodes = {k for k, v in api.items() if v["class_type"] in ("PiD_DecodeLatent", "PiD_Upscale2Kto4K")}
    prompt_id = http(port, "/prompt", json.dumps({"prompt": api, "client_id": client}).encode())["prompt_id"]
    t0, sent, done = time.time(), False, False
    while not done and time.time() - t0 < timeout:
        msg = ws.recv(1.0)
        if msg is None or msg[0] == "binary":
            continue
        m = json.loads(msg[1])
        data = m.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if m["type"] == "progress" and interrupt and not sent and data.get("node") in pid_nodes:
            http(port, "/interrupt", b"{}")
            sent = True
        elif m["type"] == "executing" and data.get("node") is None:
            done = True
        elif m["type"] in ("execution_error", "execution_interrupted", "execution_success"):
            done = True
    ws.close()
    entry = {}
    for _ in range(50):   # the history entry appears when the prompt is stored
        entry = http(port, f"/history/{prompt_id}").get(prompt_id, {})
        if entry:
            break
        time.sleep(0.2)
    status = entry.get("status") or {}
    kinds = [m[0] for m in status.get("messages", [])]
    images = [i for o in entry.get("outputs", {}).values() for i in o.get("images", []) if i.get("type") == "output"]
    return {"status": "interrupted" if "execution_interrupted" in kinds else status.get("status_str", "timeout"),
            "interrupt_sent": sent, "seconds": time.time() - t0, "images": images,
            "error": next((m[1].get("exception_message", "") for m in status.get("messages", [])
                           if m[0] == "execution_error"), "")}


def image_size(port: int, image: dict):
    path = host_e2e.state_dir() / f"port-{port}" / "base" / "output" / image.get("subfolder", "") / image["filename"]
    with open(path, "rb") as f:
        return struct.unpack(">II", f.read(24)[16:24])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8233)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=3600, help="submit no prompt after this many seconds")
    ap.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after the warm-up")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    warm = min(WARMUP, args.prompts // 2)
    version = host_e2e.comfy_version()
    out = host_e2e.CACHE / f"run-{version}"
    host_e2e.build_standins(out, list(WORKFLOWS.values()))
    failures, rows, rss = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root, first = soak_models(out, Path(tmp))
        print(harness(*host_e2e.serve_args(root, args.port)).stdout.strip())
        ws_class = host_decode_check.load_ws_client()
        try:
            apis, t_start = prompts(args.port), time.time()
            for i in range(args.prompts):
                if time.time() - t_start > args.time_limit:
                    print(f"time limit reached after {i} prompts")
                    break
                key = ("saved", "upscale")[i % 2]
                api = json.loads(json.dumps(apis[key]))
                ckpt = (first, SECOND_NAME)[(i // 10) % 2]
                text, seed = rng.choice(TEXTS), rng.randrange(2**32)
                for node in api.values():
                    if node["class_type"] == "PiD_LoadModel":
                        node["inputs"]["checkpoint"] = ckpt
                    if node["class_type"] in ("PiD_DecodeLatent", "PiD_Upscale2Kto4K"):
                        node["inputs"]["seed"] = seed
                        if isinstance(node["inputs"].get("prompt"), str):
                            node["inputs"]["prompt"] = text
                    if node["class_type"] == "PrimitiveStringMultiline":
                        node["inputs"]["value"] = text
                interrupt = i % 5 == 3 and i < args.prompts - 1
                if interrupt:   # 4 steps at a larger size: the interrupt lands with steps to go
                    for node in api.values():
                        if node["class_type"] in ("PiD_DecodeLatent", "PiD_Upscale2Kto4K"):
                            node["inputs"]["steps"] = 4
                        if node["class_type"] == "PiD_DecodeLatent":
                            node["inputs"]["output_long_side"] = 1024
                r = submit(ws_class, args.port, api, interrupt, 900)
                sizes = [image_size(args.port, im) for im in r["images"]]
                row = dict(i=i, workflow=key, checkpoint="A" if ckpt == first else "B", seed=seed, text=text[:24],
                           interrupt=interrupt, sizes=sizes, **{k: r[k] for k in ("status", "seconds", "error")})
                rows.append(row)
                if interrupt and r["status"] != "interrupted":
                    sent = "sent" if r["interrupt_sent"] else "not sent: no progress seen"
                    failures.append(f"prompt {i}: interrupt {sent}, but ended as {r['status']} {r['error'][:120]}")
                if not interrupt and (r["status"] != "success" or not sizes):
                    failures.append(f"prompt {i}: {r['status']} {r['error'][:200]}")
                print(f"{i:3d} {key:7s} ckpt {row['checkpoint']} seed {seed:10d} {'INTERRUPT ' if interrupt else ''}"
                      f"{r['status']:11s} {r['seconds']:6.1f}s  {sizes}  {text[:30]!r}", flush=True)
                if i + 1 == warm:
                    rss["after_warmup"] = rss_bytes(args.port)
            rss["end"] = rss_bytes(args.port)
            last = submit(ws_class, args.port, json.loads(json.dumps(apis["saved"])), False, 900)
            last_sizes = [image_size(args.port, im) for im in last["images"]]
            if last["status"] != "success" or not last_sizes:
                failures.append(f"the last plain decode: {last['status']} {last['error'][:200]}")
        finally:
            harness("stop", "--port", str(args.port), check=False)
    growth = (rss["end"] / rss["after_warmup"] - 1) if "after_warmup" in rss else float("nan")
    if not growth <= args.max_growth:
        failures.append(f"server RSS grew {growth:+.1%} after the warm-up (allowed {args.max_growth:.0%})")
    done = [r for r in rows if not r["interrupt"]]
    cut = [r for r in rows if r["interrupt"]]
    print(f"ComfyUI {version}: {len(rows)} prompts ({len(done)} decodes, {len(cut)} interrupted mid-decode, "
          f"{len({r['checkpoint'] for r in rows})} checkpoints switched every 10, {len(set(r['text'] for r in rows))} "
          f"prompt texts); RSS {rss.get('after_warmup', 0) / 2**30:.2f} GiB after {warm} prompts, "
          f"{rss.get('end', 0) / 2**30:.2f} GiB at the end ({growth:+.1%}); finished outputs "
          f"{sorted({tuple(s) for r in done for s in r['sizes']})}; interrupted statuses "
          f"{sorted({r['status'] for r in cut})}; last decode {last['status']} {last_sizes}")
    for f in failures:
        print("FAIL", f)
    print("soak passed" if not failures else f"soak FAILED ({len(failures)} problems)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
