"""Load every shipped workflow into the host's own web frontend and check what it made of it.

    COMFY_HOSTENV=~/.cache/comfy_host_v033 ~/.cache/pid_ui_venv/bin/python tools/ui_check.py [--thumbnails]

Needs Debian's ``chromium`` and a python with ``websocket-client`` and Pillow (e.g.
``python3 -m venv ~/.cache/pid_ui_venv && ~/.cache/pid_ui_venv/bin/pip install websocket-client pillow``).
Serves the pack with the stand-in models of tools/host_fixtures.py, built or completed first (so
loaders are not flagged for missing files), then for each workflow in workflows/:

1. ``../shared/tools/comfy_ui_shot.py`` loads it with the frontend's ``app.loadGraphData``: node
   types the frontend flags and a dialog about missing nodes or errors are failures;
2. one more headless session loads it again and reads back ``app.graph.serialize()``: every node
   of the file must be there with the same type and exactly the same ``widgets_values``;
3. with ``--thumbnails`` that session closes what the frontend opened on its own (0.33's template
   browser on a first visit; a dialog that will not close is a failure), fits the graph into the
   window, takes a screenshot and saves it as ``workflows/<name>.jpg`` (the template browser's
   thumbnail, beside the workflow).
A workflow that uses core nodes this ComfyUI lacks (FLUX.2 on 0.3.64) is reported as skipped, as
tools/host_e2e.py does. Not part of CI. Exit 0 when every workflow passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import host_e2e
import websocket
from host_e2e import ROOT
from PIL import Image

SHARED = Path(os.environ.get("COMFY_HOST_TOOLS_DIR", ROOT.parent / "shared" / "tools"))
APP = "(window.app || (window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app))"


class Browser:
    """A headless Chromium tab on the server's frontend, driven over the DevTools protocol."""

    def __init__(self, port: int, devtools_port: int, wait: float):
        self.profile = tempfile.mkdtemp(prefix="pid_ui_check_")
        self.proc = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                                      f"--remote-debugging-port={devtools_port}", f"--user-data-dir={self.profile}",
                                      "--window-size=1800,1100", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        tabs = []
        for _ in range(100):
            try:
                tabs = json.loads(opener.open(f"http://127.0.0.1:{devtools_port}/json", timeout=5).read())
                break
            except OSError:
                time.sleep(0.3)
        page = next(t for t in tabs if t.get("type") == "page")
        # no Origin header: Chromium refuses DevTools websockets from origins it was not told to allow
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)
        self.n = 0
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        time.sleep(wait)

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        return r.get("result", {}).get("result", {}).get("value")

    def loaded_graph(self, workflow: dict) -> dict:
        out = self.js(f"""(async () => {{ const app = {APP}; if (!app) return JSON.stringify({{error: 'no app'}});
            try {{ await app.loadGraphData({json.dumps(workflow)}); }}
            catch (e) {{ return JSON.stringify({{error: String(e)}}); }}
            return JSON.stringify(app.graph.serialize()); }})()""")
        return json.loads(out or '{"error": "no result"}')

    def close_dialogs(self) -> list:
        """Close what the frontend opened on its own (0.33 opens its template browser on a first
        visit) with the dialogs' own close buttons, then Escape; returns the headers of dialogs
        still open afterwards."""
        opened = """[...document.querySelectorAll('[role=dialog], .p-dialog')].filter(d => d.offsetParent !== null)"""
        for _ in range(3):
            if not self.js(f"({opened}).length"):
                return []
            self.js(f"""({opened}).forEach(d => {{ const b = d.querySelector(
                '.p-dialog-close-button, button[aria-label=Close], button[aria-label=close]'); if (b) b.click(); }})""")
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                          windowsVirtualKeyCode=27)
            time.sleep(0.8)
        return self.js(f"({opened}).map(d => (d.innerText || '').slice(0, 80))") or []

    def screenshot_fitted(self, png: Path, chrome=(60, 80), margin: int = 20) -> float:
        """Fit the whole graph into the part of the window the frontend's side bar (`chrome[0]` px)
        and tab/tool bars (`chrome[1]` px) leave free, hide the minimap and canvas info, save a PNG
        cropped to the graph area; returns the zoom used (above ~0.6 the frontend draws titles and
        widgets)."""
        left, top = chrome[0] + margin, chrome[1] + margin
        scale = self.js(f"""(async () => {{ const app = {APP}; const ns = app.graph._nodes;
            for (const [k, v] of [['Comfy.Minimap.Visible', false], ['Comfy.Graph.CanvasInfo', false]]) {{
                try {{ await app.extensionManager.setting.set(k, v); }} catch (e) {{}} }}
            const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - 30));
            const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0]));
            const y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
            const el = app.canvas.canvas, w = el.clientWidth - {left + margin}, h = el.clientHeight - {top + margin};
            const s = Math.min(w / (x1 - x0), h / (y1 - y0), 1.0);
            app.canvas.ds.scale = s; app.canvas.ds.offset = [{left} / s - x0, {top} / s - y0];
            app.graph.setDirtyCanvas(true, true); await new Promise(r => setTimeout(r, 1500)); return s; }})()""")
        shot = self.call("Page.captureScreenshot", format="png")
        png.write_bytes(base64.b64decode(shot["result"]["data"]))
        with Image.open(png) as im:
            im.crop((chrome[0], chrome[1], im.width, im.height)).save(png)
        return scale

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def compare(original: dict, loaded: dict) -> list:
    """What the frontend dropped or changed: node types and widget values, node by node."""
    if "error" in loaded:
        return [f"loadGraphData failed: {loaded['error']}"]
    got = {n["id"]: n for n in loaded.get("nodes", [])}
    problems = []
    for node in original["nodes"]:
        other = got.get(node["id"])
        if other is None:
            problems.append(f"node {node['id']} ({node['type']}) is gone")
            continue
        if other["type"] != node["type"]:
            problems.append(f"node {node['id']}: type {node['type']} became {other['type']}")
        want, have = node.get("widgets_values", []), other.get("widgets_values", [])
        if want != have:
            problems.append(f"node {node['id']} ({node['type']}): widgets {want!r} became {have!r}")
    if len(got) != len(original["nodes"]):
        problems.append(f"{len(original['nodes'])} nodes in the file, {len(got)} after loading")
    return problems


def chromium_shim(folder: Path) -> dict:
    """An environment whose ``chromium`` allows DevTools websockets from 127.0.0.1: Chromium >= 111
    refuses the Origin header websocket-client sends unless told --remote-allow-origins, and
    comfy_ui_shot.py (shared, not ours to edit) does not pass it."""
    shim = folder / "chromium"
    shim.write_text('#!/bin/sh\nexec /usr/bin/chromium --remote-allow-origins=http://127.0.0.1:9333 "$@"\n')
    shim.chmod(0o755)
    return dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def shot(port: int, workflow: Path, png: Path, wait: float, env: dict) -> dict:
    out = subprocess.run([sys.executable, str(SHARED / "comfy_ui_shot.py"), str(port), str(workflow), str(png),
                          "--wait", str(wait), "--scale", "0.55"], capture_output=True, text=True, env=env)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"comfy_ui_shot exit {out.returncode}: {out.stderr[-300:]}"}


def to_thumbnail(png: Path, jpg: Path) -> None:
    with Image.open(png) as im:
        im.convert("RGB").save(jpg, "JPEG", quality=85, optimize=True)


def serve(port: int) -> str:
    version = host_e2e.comfy_version()
    out = host_e2e.CACHE / f"run-{version}"
    host_e2e.build_standins(out, None)   # every workflow's files (cached: seconds when built)
    host_e2e.harness(*host_e2e.serve_args(out, port))
    # A returning user: the frontend opens its template browser on a first visit (over the graph).
    req = urllib.request.Request(f"http://127.0.0.1:{port}/settings/Comfy.TutorialCompleted", data=b"true",
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30).close()
    return version


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8213)
    ap.add_argument("--devtools-port", type=int, default=9343)
    ap.add_argument("--wait", type=float, default=15.0, help="seconds for the frontend to start")
    ap.add_argument("--thumbnails", action="store_true", help="write workflows/<name>.jpg")
    args = ap.parse_args(argv)
    version = serve(args.port)
    failures, skipped = 0, 0
    try:
        object_info = host_e2e.http(args.port, "/object_info")
        browser = Browser(args.port, args.devtools_port, args.wait)
        with tempfile.TemporaryDirectory() as tmp:
            env = chromium_shim(Path(tmp))
            for path in sorted((ROOT / "workflows").glob("*.json")):
                wf = json.loads(path.read_text())
                absent = host_e2e.missing_on_host(None, wf, object_info)
                if absent:   # the frontend would flag them too: a workflow for a newer ComfyUI
                    skipped += 1
                    print(f"{path.stem:34s} SKIPPED  {'; '.join(absent)}", flush=True)
                    continue
                png = Path(tmp) / f"{path.stem}.png"
                info = shot(args.port, path, png, args.wait, env)
                problems = [f"frontend flags {info['errors']}"] if info.get("errors") else []
                if info.get("error"):
                    problems.append(info["error"])
                dialogs = info.get("dialogs") or ""
                if any(w in dialogs.lower() for w in ("missing", "error", "not found")):
                    problems.append(f"dialog: {dialogs[:200]!r}")
                problems += compare(wf, browser.loaded_graph(wf))
                if args.thumbnails and not problems:
                    still_open = browser.close_dialogs()
                    if still_open:
                        problems.append(f"a dialog covers the graph: {still_open}")
                if args.thumbnails and not problems:
                    zoom = browser.screenshot_fitted(png)
                    to_thumbnail(png, path.with_suffix(".jpg"))
                    problems_note = f" (thumbnail at zoom {zoom:.2f})"
                else:
                    problems_note = ""
                failures += bool(problems)
                print(f"{path.stem:34s} {'ok' if not problems else 'FAIL'}  nodes {info.get('nodes', '?'):>3}  "
                      + ("; ".join(problems) if problems else "types and widget values as in the file")
                      + problems_note, flush=True)
        browser.close()
    finally:
        host_e2e.harness("stop", "--port", str(args.port), check=False)
    total = len(list((ROOT / "workflows").glob("*.json"))) - skipped
    print(f"ComfyUI {version} frontend: {total - failures}/{total} workflows loaded as they are"
          + (f" ({skipped} skipped: core nodes this ComfyUI lacks)" if skipped else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
