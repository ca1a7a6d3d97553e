"""Live previews, the colour report and a tiled decode past the trained sizes, in a real ComfyUI (not CI).

    COMFY_HOSTENV=~/.cache/comfy_host_v033 python3 tools/host_decode_check.py [--port 8231]

Serves the pack with ``--preview-method auto`` on the stand-in models of ``tools/host_e2e.py`` and runs
the saved-latent workflow with the FLUX VAE connected to PiD Decode Latent and its ``color_report``
shown by the stock PreviewAny node: once as shipped (whole image), once at a long side past the
v1.5 range (4096) with ``tile_size`` 2304. The stand-in PiD has custom (tiny) dimensions, so it
has no trained range of its own that would make the automatic plan tile (that choice is tested in
tests/test_nodes.py and tests/test_tiling.py); ``tile_size`` asks for tiles instead. It listens on
the websocket as the frontend does and checks, per run: the binary preview frames that arrive while
PiD's node runs are JPEG images no larger than the preview size, the progress total is steps x
tiles (1 tile whole, more tiled), the colour report text is in the prompt's history, and SaveImage
wrote an image of the asked size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

import host_e2e
from host_e2e import HARNESS, harness, http

PREVIEW_SIZE = 512
TILED_SIDE = 4608       # past the v1.5 (2kto4k) range, whose long side ends at 4096
TILE = 2304


def load_ws_client():
    spec = importlib.util.spec_from_file_location("comfy_host_harness", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.WS


def jpeg_size(data: bytes):
    """(width, height) from a JPEG's SOF marker, or None if the bytes are not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def preview_image(frame: bytes):
    """The image bytes of a ComfyUI binary preview message (types 1 and 4), else None."""
    kind = struct.unpack(">I", frame[:4])[0]
    if kind == 1:        # PREVIEW_IMAGE: event, image type, bytes
        return frame[8:]
    if kind == 4:        # PREVIEW_IMAGE_WITH_METADATA: event, metadata length, JSON, bytes
        n = struct.unpack(">I", frame[4:8])[0]
        return frame[8 + n:]
    return None


def graph(port: int, output_long_side: int, tile_size: int) -> tuple:
    """The saved-latent workflow as an API prompt, with the VAE and a PreviewAny on color_report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.json"
        harness("convert", str(host_e2e.ROOT / "workflows" / "pid_decode_saved_latent.json"), "--port", str(port),
                "-o", str(out))
        api = json.loads(out.read_text())
    decode = next(k for k, v in api.items() if v["class_type"] == "PiD_DecodeLatent")
    api["900"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    api["901"] = {"class_type": "PreviewAny", "inputs": {"source": [decode, 1]}}
    api[decode]["inputs"].update(vae=["900", 0], output_long_side=output_long_side, tile_size=tile_size)
    return api, decode


def run(ws_class, port: int, api: dict, decode: str, timeout: float) -> dict:
    client = uuid.uuid4().hex
    ws = ws_class(port, client)
    prompt_id = http(port, "/prompt", json.dumps({"prompt": api, "client_id": client}).encode())["prompt_id"]
    current, previews, progress_max, done = None, [], 0, False
    t0 = time.time()
    while not done and time.time() - t0 < timeout:
        msg = ws.recv(1.0)
        if msg is None:
            continue
        if msg[0] == "binary":
            image = preview_image(msg[1])
            if image is not None and current == decode:
                previews.append(jpeg_size(image))
            continue
        m = json.loads(msg[1])
        data = m.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        if m["type"] == "executing":
            current = data.get("node")
            done = current is None
        elif m["type"] == "progress" and data.get("node") == decode:
            progress_max = max(progress_max, int(data.get("max") or 0))
        elif m["type"] in ("execution_error", "execution_interrupted"):
            done = True
    ws.close()
    entry = http(port, f"/history/{prompt_id}").get(prompt_id, {})
    outputs = entry.get("outputs", {})
    texts = [t for o in outputs.values() for t in o.get("text", [])]
    images = [i for o in outputs.values() for i in o.get("images", []) if i.get("type") == "output"]
    return {"status": (entry.get("status") or {}).get("status_str", "timeout"), "seconds": time.time() - t0,
            "previews": previews, "progress_max": progress_max, "texts": texts, "images": images,
            "messages": (entry.get("status") or {}).get("messages", [])}


def image_size(workdir: Path, image: dict):
    path = workdir / "base" / "output" / image.get("subfolder", "") / image["filename"]
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">II", head[16:24])   # PNG IHDR: width, height


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8231)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args(argv)
    version = host_e2e.comfy_version()
    out = host_e2e.CACHE / f"run-{version}"
    host_e2e.build_standins(out, ["pid_decode_saved_latent", "pid_upscale_2k_to_4k"])
    serve = host_e2e.serve_args(out, args.port, extra_args=f"--preview-method auto --preview-size {PREVIEW_SIZE}")
    print(harness(*serve).stdout.strip())
    workdir = host_e2e.state_dir() / f"port-{args.port}"
    ws_class, failures = load_ws_client(), []
    try:
        for label, side, tile in (("whole", 0, 0), ("tiled", TILED_SIDE, TILE)):
            api, decode = graph(args.port, side, tile)
            api[decode]["inputs"]["steps"] = args.steps
            r = run(ws_class, args.port, api, decode, args.timeout)
            sizes = [image_size(workdir, i) for i in r["images"]]
            tiles = r["progress_max"] // args.steps if r["progress_max"] else 0
            shown = sorted({s for s in r["previews"] if s})
            print(f"{label:6s} {r['status']:8s} {r['seconds']:6.1f}s  output {sizes}  progress total "
                  f"{r['progress_max']} ({tiles} tile(s) x {args.steps} steps)  previews {len(r['previews'])} "
                  f"(JPEG sizes {shown})\n       color_report: {r['texts']}")
            problems = []
            if r["status"] != "success":
                problems.append(f"status {r['status']}: {str(r['messages'])[-400:]}")
            if not r["previews"] or not all(s and max(s) <= PREVIEW_SIZE for s in r["previews"]):
                problems.append("no JPEG previews of at most the preview size during PiD's node")
            if not r["texts"] or "no check" in " ".join(r["texts"]).lower():
                problems.append("no colour report text in the outputs")
            if side and (tiles < 2 or not sizes or max(sizes[0]) != side):
                problems.append(f"expected a tiled decode with long side {side}")
            if not side and tiles != 1:
                problems.append("expected a whole-image decode (1 tile)")
            failures += [f"{label}: {p}" for p in problems]
    finally:
        harness("stop", "--port", str(args.port), check=False)
    for f in failures:
        print("FAIL", f)
    print(f"ComfyUI {version}: {'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
