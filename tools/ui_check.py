"""Load every shipped workflow into a real ComfyUI web frontend and check that it looks finished.

    COMFY_HOSTENV=~/.cache/comfy_host_v033 ~/.cache/pid_ui_venv/bin/python tools/ui_check.py \
        [--front-end-root DIR] [--thumbnails] [--shots /tmp/ui_shots] [WORKFLOW.json ...]

Needs Debian's ``chromium`` and a python with ``websocket-client`` and Pillow (e.g.
``python3 -m venv ~/.cache/pid_ui_venv && ~/.cache/pid_ui_venv/bin/pip install websocket-client pillow``).
Serves the pack with the stand-in models of tools/host_fixtures.py, built or completed first (so
loaders are not flagged for missing files), with the host's own frontend or the one in
``--front-end-root`` (a ``pip install --target DIR comfyui-frontend-package==X.Y.Z`` folder, or its
``static/``), then for each workflow (default: workflows/*.json):

1. ``../shared/tools/comfy_ui_shot.py`` loads it with the frontend's ``app.loadGraphData``: node
   types the frontend flags and a dialog about missing nodes or errors shown after loading (its
   ``dialogs``, read before any dialog is closed) are failures;
2. one more headless session (a 1800x1100 window, whose canvas is 1800x957) loads it as a workflow
   opened normally, reads the dialogs and toasts shown before closing any (1.58's "Missing node"
   toast is one comfy_ui_shot does not see) and ``app.graph.serialize()``: every node of the file
   must be there with the same type and exactly the same ``widgets_values``;
3. in that session: the zoom the frontend restored from the saved ``extra.ds`` and how many nodes
   that view shows whole; the frontend's node sizes (``node.size`` after loading, which the
   frontend grows to ``node.computeSize()``) where they differ from the saved ones; overlaps
   between nodes drawn with the larger of saved and frontend size and LiteGraph's title bar above
   ``pos``; widget labels the canvas would cut (label + value measured in LiteGraph's widget font
   with its widget margins; the pack's ``PiD_*`` nodes fail, others are listed); empty space below
   the widgets of the pack's nodes; notes whose text does not fit their box; then the zoom after
   opening it the way the template browser does (``openSource: 'template'``: the frontend always
   fits the graph, zoom 0.75 x canvas / graph). A zoom below ``MIN_ZOOM``, an overlap, a cut PiD
   label, a gap, a note that hides text or a saved view that hides part of the graph is a failure;
4. ``--shots DIR`` saves a screenshot of the template view (DIR/<name>.png); ``--thumbnails`` crops
   that view to the graph and saves it as ``workflows/<name>.jpg`` (the template browser's
   thumbnail, beside the workflow). ``--json-out`` writes every measurement.
The last line names the ComfyUI and frontend versions (``/system_stats``'
``comfyui_frontend_version`` where the server reports it, else the package's dist-info or folder
name, checked against the version the served frontend writes into workflows).
A workflow that uses core nodes this ComfyUI lacks (FLUX.2 on 0.3.64) is reported as skipped, as
tools/host_e2e.py does. Uses DevTools ports --devtools-port and the next one. Not part of CI. Exit
0 when every workflow passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
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
WINDOW = (1800, 1100)
MIN_ZOOM = 0.6     # the frontend's low-quality threshold is 8 px / 14 px = 0.57 at DPR 1 (LOD setting 8)
MAX_GAP = 30       # px of empty node below the last widget row of a PiD node
# dialogs and toasts (1.58's "Missing node" toast is a role=status element, no PrimeVue class)
DIALOGS = ("[...document.querySelectorAll('[role=dialog], [role=alertdialog], [role=alert], [role=status], "
           ".p-dialog, .comfy-modal, .p-toast-message')].filter(d => d.getClientRects().length && "
           "(d.innerText || '').trim())")
BAD_DIALOG = ("missing", "error", "not found", "failed")
# Debian's /usr/bin/chromium is a shell script that does not exec the browser: terminating it
# would leave Chromium running (and holding its DevTools port), so start the browser itself.
CHROMIUM = next((c for c in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if c and os.path.exists(c)),
                "chromium")
QUIET = ["--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", *QUIET]

# Runs in the page after app.loadGraphData: what the frontend made of the graph (see the module doc).
MEASURE_JS = r"""
async (wf) => {
  const app = %(app)s, canvas = app.canvas, LG = window.LiteGraph || {};
  const titleH = LG.NODE_TITLE_HEIGHT || 30;
  const font = canvas.inner_text_font || `normal ${LG.NODE_SUBTEXT_SIZE || 12}px ${LG.NODE_FONT || 'Inter'}`;
  try { await document.fonts.load(font); } catch (e) {}
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = font;
  const textW = t => ctx.measureText(String(t ?? '')).width;
  const saved = new Map(wf.nodes.map(n => [n.id, n]));
  const rowVisible = (node, w) => {
    const f = node.isWidgetRowVisible || node.isWidgetVisible;
    return f ? f.call(node, w) : !w.hidden;
  };
  const noteText = node => {   // a note's text box: [height its text needs, height it has], graph px
    const el = (node.widgets || []).map(w => w.element).find(e => e) || null;
    if (!el || !['Note', 'MarkdownNote'].includes(node.type)) return null;
    const shown = e => { const st = getComputedStyle(e);
      return st.display !== 'none' && st.visibility !== 'hidden' && Number(st.opacity) > 0; };
    const boxes = [el, ...el.querySelectorAll('*')].filter(e => shown(e) && e.clientHeight > 0
      && ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowY));
    if (!boxes.length) return null;
    const box = boxes[0], r = box.getBoundingClientRect(), s = canvas.ds.scale;
    let need = box.scrollHeight;
    if (box.tagName !== 'TEXTAREA' && box.lastElementChild)
      need = Math.ceil((box.lastElementChild.getBoundingClientRect().bottom - r.top) / s
                       + parseFloat(getComputedStyle(box).paddingBottom || 0));
    return {need: Math.max(need, 0), has: box.clientHeight, hidden: box.scrollHeight - box.clientHeight};
  };
  const nodes = app.graph._nodes.map(node => {
    const s = saved.get(node.id) || {pos: [...node.pos], size: [...node.size]};
    const compute = node.computeSize ? [...node.computeSize()] : [...node.size];
    const out = {id: node.id, type: node.type, title: node.title, pos: [...node.pos], saved: s.size,
                 size: [...node.size], compute, cut: [], gap: 0};
    const note = noteText(node);
    if (note) out.note = note;
    let dom = false;
    for (const w of node.widgets || []) {
      if (!rowVisible(node, w)) continue;
      const linked = (node.inputs || []).some(i => i.widget && i.widget.name === w.name && i.link != null);
      if (w.element || ['customtext', 'textarea', 'markdown'].includes(w.type)) {
        dom = dom || !linked;   // extra height makes a visible text box taller; a linked one stays empty
        continue;
      }
      const C = w.constructor || {}, m = C.margin ?? 15, gap = C.labelValueGap ?? 5;
      const label = w.label || w.name;
      let value = '';
      if (!linked) { try { value = w._displayValue ?? String(w.value); } catch (e) { value = String(w.value); } }
      const width = w.width || node.size[0];
      let need;    // node width that draws label, gap and value uncut (LiteGraph's widget geometry)
      if (w.type === 'toggle' || w.type === 'boolean')
        need = 2 * m + textW(label) + gap + 40
          + textW(w.value ? (w.options?.on || 'true') : (w.options?.off || 'false'));
      else if (w.type === 'text' || w.type === 'string')
        need = 4 * m + textW(label) + gap + textW(value);
      else if (w.type === 'combo' || w.type === 'number' || w.type === 'slider')
        need = 4 * m + 25 + textW(label) + gap + textW(value);
      else continue;
      if (need > width + 0.5) out.cut.push({widget: w.name, label, value, need: Math.ceil(need), width});
    }
    if (!dom && String(node.type).startsWith('PiD_')) out.gap = Math.round(node.size[1] - compute[1]);
    return out;
  });
  canvas.ds.computeVisibleArea(canvas.viewport);
  const va = canvas.visible_area, rect = n => [n.pos[0], n.pos[1] - titleH,
    Math.max(n.size[0], n.saved[0]), Math.max(n.size[1], n.saved[1]) + titleH];
  const whole = nodes.filter(n => { const [x, y, w, h] = rect(n);
    return x >= va[0] && y >= va[1] && x + w <= va[0] + va[2] && y + h <= va[1] + va[3]; }).length;
  const overlaps = [];
  for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) {
    const [ax, ay, aw, ah] = rect(nodes[i]), [bx, by, bw, bh] = rect(nodes[j]);
    const dx = Math.min(ax + aw, bx + bw) - Math.max(ax, bx), dy = Math.min(ay + ah, by + bh) - Math.max(ay, by);
    if (dx > 0 && dy > 0) overlaps.push({a: nodes[i].id, b: nodes[j].id, w: Math.round(dx), h: Math.round(dy)});
  }
  const el = canvas.canvas;
  return {scale: canvas.ds.scale, offset: [...canvas.ds.offset], whole, nodes, overlaps, font,
          canvas: [el.clientWidth, el.clientHeight]};
}
""" % {"app": APP}


class Browser:
    """A headless Chromium tab on the server's frontend, driven over the DevTools protocol."""

    def __init__(self, port: int, devtools_port: int, wait: float):
        devtools_port_free(devtools_port)
        self.profile = tempfile.mkdtemp(prefix="pid_ui_check_")
        self.proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--remote-debugging-port={devtools_port}",
                                      f"--user-data-dir={self.profile}",
                                      f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self._connect(port, devtools_port, wait)
        except BaseException:
            self.close()
            raise

    def _connect(self, port: int, devtools_port: int, wait: float) -> None:
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

    def frontend_version(self) -> str | None:
        """The version the served frontend writes into the workflows it saves."""
        return self.js(f"""(async () => {{ try {{ const p = await {APP}.graphToPrompt();
            return p.workflow.extra.frontendVersion || null; }} catch (e) {{ return null; }} }})()""")

    def prepare(self) -> list:
        """Hide the minimap and the canvas info (screenshots), close what the frontend opened on
        its own; returns the headers of those dialogs."""
        self.js(f"""(async () => {{ const app = {APP};
            for (const [k, v] of [['Comfy.Minimap.Visible', false], ['Comfy.Graph.CanvasInfo', false]]) {{
                try {{ await app.extensionManager.setting.set(k, v); }} catch (e) {{}} }} }})()""")
        shown = self.dialogs()
        self.close_dialogs()
        return shown

    def load(self, workflow: dict, name: str | None = None, template: bool = False) -> dict:
        """``app.loadGraphData`` as a normally opened workflow or as the template browser opens one,
        then waits for the frontend to place the camera (it does so on a later animation frame)."""
        call = (f"app.loadGraphData(wf, true, true, {json.dumps(name)}, {{openSource: 'template'}})"
                if template else "app.loadGraphData(wf)")
        out = self.js(f"""(async () => {{ const app = {APP}; if (!app) return JSON.stringify({{error: 'no app'}});
            const wf = {json.dumps(workflow)};
            try {{ await {call}; }} catch (e) {{ return JSON.stringify({{error: String(e)}}); }}
            for (let i = 0; i < 4; i++) await new Promise(r => requestAnimationFrame(r));
            await new Promise(r => setTimeout(r, 500));
            return JSON.stringify({{}}); }})()""")
        return json.loads(out or '{"error": "no result"}')

    def serialized(self) -> dict:
        return json.loads(self.js(f"JSON.stringify({APP}.graph.serialize())") or '{"error": "no graph"}')

    def measure(self, workflow: dict) -> dict:
        return json.loads(self.js(f"""(async () => JSON.stringify(await ({MEASURE_JS})({json.dumps(workflow)})))()""")
                          or '{"error": "no result"}')

    def dialogs(self) -> list:
        return self.js(f"({DIALOGS}).map(d => (d.innerText || '').trim().slice(0, 160))") or []

    def close_dialogs(self) -> list:
        """Close open dialogs with their own close buttons, then Escape; returns the headers of dialogs
        still open afterwards."""
        for _ in range(3):
            if not self.js(f"({DIALOGS}).length"):
                return []
            self.js(f"""({DIALOGS}).forEach(d => {{ const b = d.querySelector(
                '.p-dialog-close-button, .p-toast-close-button, button[aria-label=Close], button[aria-label=close]');
                if (b) b.click(); }})""")
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                          windowsVirtualKeyCode=27)
            time.sleep(0.8)
        return [d[:80] for d in self.dialogs()]

    def screenshot(self, png: Path, crop_to_graph: bool = False, margin: int = 24) -> None:
        """The window as it is (PNG); with ``crop_to_graph`` only the graph's bounding box (title bars
        included) plus ``margin`` px."""
        box = None
        if crop_to_graph:
            box = self.js(f"""(() => {{ const app = {APP}, c = app.canvas, ns = app.graph._nodes;
                const t = (window.LiteGraph || {{}}).NODE_TITLE_HEIGHT || 30, s = c.ds.scale, o = c.ds.offset;
                const r = c.canvas.getBoundingClientRect();
                const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - t));
                const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0]));
                const y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
                const X = x => r.left + (x + o[0]) * s, Y = y => r.top + (y + o[1]) * s;
                return [X(x0), Y(y0), X(x1), Y(y1)];
            }})()""")
        self.js(f"{APP}.graph.setDirtyCanvas(true, true)")
        time.sleep(1.0)
        shot = self.call("Page.captureScreenshot", format="png")
        png.write_bytes(base64.b64decode(shot["result"]["data"]))
        if box:
            with Image.open(png) as im:
                left, top = max(0, int(box[0]) - margin), max(0, int(box[1]) - margin)
                right, bottom = min(im.width, int(box[2]) + margin), min(im.height, int(box[3]) + margin)
                im.crop((left, top, right, bottom)).save(png)

    def close(self):
        """Ends the browser and its helper processes (its own process group) and removes its profile."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def devtools_port_free(devtools_port: int) -> None:
    """Refuse a DevTools port something already answers on: a browser left running there (another
    check's) would otherwise be driven instead of ours, with its old pages and dialogs."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(f"http://127.0.0.1:{devtools_port}/json/version", timeout=2).close()
    except OSError:
        return
    raise SystemExit(f"a browser already answers on DevTools port {devtools_port}: stop it or pass another port")


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


def judge_layout(normal: dict, template_scale: float) -> tuple:
    """(facts for the line, problems) from MEASURE_JS's result of a normal load and the zoom of a
    template load."""
    if "error" in normal:
        return "", [f"measuring failed: {normal['error']}"]
    problems = []
    nodes = normal["nodes"]
    names = {n["id"]: f"{n['id']} {n.get('title') or n.get('type')}" for n in nodes}
    if normal["scale"] < MIN_ZOOM - 1e-6:
        problems.append(f"normal zoom {normal['scale']:.2f} < {MIN_ZOOM}")
    if template_scale is None or template_scale < MIN_ZOOM - 1e-6:
        problems.append(f"template zoom {template_scale} < {MIN_ZOOM}")
    if normal["whole"] < len(nodes):
        problems.append(f"the saved view shows {normal['whole']}/{len(nodes)} nodes whole")
    for o in normal["overlaps"]:
        problems.append(f"overlap {names[o['a']]} / {names[o['b']]} ({o['w']}x{o['h']} px)")
    cut = [(n, c) for n in nodes for c in n["cut"] if n["type"].startswith("PiD_")]
    for n, c in cut:
        problems.append(f"cut label: {names[n['id']]}.{c['widget']} {c['value']!r} needs width {c['need']}, "
                        f"has {c['width']:.0f}")
    core_cut = [f"{names[n['id']]}.{c['widget']} (needs {c['need']})" for n in nodes for c in n["cut"]
                if not n["type"].startswith("PiD_")]
    for n in nodes:
        if n["gap"] > MAX_GAP:
            problems.append(f"{names[n['id']]}: {n['gap']} px empty below the widgets "
                            f"(height {n['size'][1]:.0f}, needs {n['compute'][1]:.0f})")
        if n.get("note") and n["note"]["hidden"] > 2:
            problems.append(f"{names[n['id']]}: the text needs {n['note']['need']} px, the note shows "
                            f"{n['note']['has']}")
    notes = [f"{n['note']['need']}/{n['note']['has']}" for n in nodes if n.get("note")]
    grown = [f"{n['id']} {n['saved'][0]:.0f}x{n['saved'][1]:.0f}->{n['size'][0]:.0f}x{n['size'][1]:.0f}"
             for n in nodes if any(abs(a - b) > 0.5 for a, b in zip(n["saved"], n["size"]))]
    template = "?" if template_scale is None else f"{template_scale:.2f}"
    facts = (f"zoom normal {normal['scale']:.2f} template {template}  view {normal['whole']}/{len(nodes)}"
             f"  overlaps {len(normal['overlaps'])}  cut labels {len(cut)}"
             + (f"  note text/box {' '.join(notes)} px" if notes else "")
             + (f"  core labels cut: {', '.join(core_cut)}" if core_cut else "")
             + (f"  resized by the frontend: {', '.join(grown)}" if grown else ""))
    return facts, problems


def chromium_shim(folder: Path, devtools_port: int) -> dict:
    """An environment whose ``chromium`` allows DevTools websockets from 127.0.0.1: Chromium >= 111
    refuses the Origin header websocket-client sends unless told --remote-allow-origins, and
    comfy_ui_shot.py (shared, not ours to edit) does not pass it."""
    shim = folder / "chromium"
    shim.write_text(f"#!/bin/sh\nexec {CHROMIUM} {' '.join(QUIET)} "
                    f'--remote-allow-origins=http://127.0.0.1:{devtools_port} "$@"\n')
    shim.chmod(0o755)
    return dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def shot(port: int, workflow: Path, png: Path, wait: float, env: dict, devtools_port: int) -> dict:
    devtools_port_free(devtools_port)
    out = subprocess.run([sys.executable, str(SHARED / "comfy_ui_shot.py"), str(port), str(workflow), str(png),
                          "--wait", str(wait), "--scale", "0.6", "--devtools-port", str(devtools_port)],
                         capture_output=True, text=True, env=env)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"comfy_ui_shot exit {out.returncode}: {out.stderr[-300:]}"}


def bad_dialogs(texts) -> list:
    texts = [texts] if isinstance(texts, str) else texts
    return [t for t in texts if t and any(w in t.lower() for w in BAD_DIALOG)]


def to_thumbnail(png: Path, jpg: Path, width: int = 1024) -> None:
    with Image.open(png) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im.save(jpg, "JPEG", quality=85, optimize=True)


def static_dir(front_end_root: Path | None) -> Path | None:
    """The folder ComfyUI serves: DIR/comfyui_frontend_package/static for a pip --target DIR."""
    if front_end_root is None:
        return None
    for cand in (front_end_root / "comfyui_frontend_package" / "static", front_end_root / "static", front_end_root):
        if (cand / "index.html").exists():
            return cand.resolve()
    raise SystemExit(f"no frontend (index.html) under {front_end_root}")


def package_version(static: Path | None) -> str | None:
    """The frontend package's version from its dist-info beside it (the host venv's for the default)."""
    if static is None:
        roots = list((host_e2e.HOSTENV / "venv").glob("lib/python*/site-packages"))
    else:
        roots = [p for p in static.parents if p.name == "comfyui_frontend_package"][:1]
        roots = [roots[0].parent] if roots else [static.parent]
    for root in roots:
        for info in sorted(root.glob("comfyui_frontend_package-*.dist-info")):
            return info.name.removesuffix(".dist-info").split("-")[1]
    name = static.parent.parent.name if static is not None else ""
    return name.split("-", 1)[1] if name.startswith("fe-") else None


def serve(port: int, static: Path | None) -> str:
    version = host_e2e.comfy_version()
    out = host_e2e.CACHE / f"run-{version}"
    host_e2e.build_standins(out, None)   # every workflow's files (cached: seconds when built)
    host_e2e.harness(*host_e2e.serve_args(out, port, extra_args=f"--front-end-root {static}" if static else None))
    # A returning user: the frontend opens its template browser on a first visit (over the graph).
    req = urllib.request.Request(f"http://127.0.0.1:{port}/settings/Comfy.TutorialCompleted", data=b"true",
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30).close()
    return version


def check_one(path: Path, args, browser: Browser, env: dict, tmp: Path) -> dict:
    """The problems, the facts line and the measurements of one workflow."""
    wf = json.loads(path.read_text())
    png = tmp / f"{path.stem}.png"
    info = shot(args.port, path, png, args.wait, env, args.devtools_port + 1)
    problems = [f"frontend flags {info['errors']}"] if info.get("errors") else []
    if info.get("error"):
        problems.append(info["error"])
    problems += [f"dialog: {d[:200]!r}" for d in bad_dialogs(info.get("dialogs") or "")]
    loaded = browser.load(wf)
    problems += [f"dialog after loading: {d!r}" for d in bad_dialogs(browser.dialogs())]
    browser.close_dialogs()
    problems += compare(wf, loaded if "error" in loaded else browser.serialized())
    normal = browser.measure(wf)
    if "error" not in browser.load(wf, name=path.stem, template=True):
        template_scale = browser.js(f"{APP}.canvas.ds.scale")
    else:
        template_scale = None
    browser.close_dialogs()
    facts, layout = judge_layout(normal, template_scale)
    problems += layout
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
        browser.screenshot(args.shots / f"{path.stem}.png")
    if args.thumbnails and not problems:
        still_open = browser.close_dialogs()
        if still_open:
            problems.append(f"a dialog covers the graph: {still_open}")
        else:
            browser.screenshot(png, crop_to_graph=True)
            to_thumbnail(png, path.with_suffix(".jpg"))
            facts += "  thumbnail written"
    return {"name": path.stem, "problems": problems, "facts": facts, "nodes": info.get("nodes", "?"),
            "normal": normal, "template_scale": template_scale}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflows", nargs="*", type=Path, help="default: workflows/*.json")
    ap.add_argument("--front-end-root", type=Path, help="frontend to serve (default: the host's own)")
    ap.add_argument("--port", type=int, default=8213)
    ap.add_argument("--devtools-port", type=int, default=9343, help="this one and the next")
    ap.add_argument("--wait", type=float, default=15.0, help="seconds for the frontend to start")
    ap.add_argument("--thumbnails", action="store_true", help="write workflows/<name>.jpg")
    ap.add_argument("--shots", type=Path, help="save a PNG of each workflow as the template browser opens it")
    ap.add_argument("--json-out", type=Path, help="write every workflow's measurements here")
    args = ap.parse_args(argv)
    static = static_dir(args.front_end_root.expanduser() if args.front_end_root else None)
    paths = args.workflows or sorted((ROOT / "workflows").glob("*.json"))
    version = serve(args.port, static)
    failures, skipped, frontend, rows, browser = 0, 0, None, [], None
    try:
        stats = host_e2e.http(args.port, "/system_stats") or {}
        frontend = stats.get("system", {}).get("comfyui_frontend_version") or package_version(static)
        object_info = host_e2e.http(args.port, "/object_info")
        browser = Browser(args.port, args.devtools_port, args.wait)
        served = browser.frontend_version()
        if served and served != frontend:
            print(f"note: the served frontend says {served}, the package {frontend}")
            frontend = served
        opened = browser.prepare()
        if opened:
            print(f"closed on start: {[d[:60] for d in opened]}")
        with tempfile.TemporaryDirectory() as tmp:
            env = chromium_shim(Path(tmp), args.devtools_port + 1)
            for path in paths:
                absent = host_e2e.missing_on_host(None, json.loads(path.read_text()), object_info)
                if absent:   # the frontend would flag them too: a workflow for a newer ComfyUI
                    skipped += 1
                    print(f"{path.stem:34s} SKIPPED  {'; '.join(absent)}", flush=True)
                    continue
                row = check_one(path, args, browser, env, Path(tmp))
                rows.append(row)
                failures += bool(row["problems"])
                print(f"{path.stem:34s} {'FAIL' if row['problems'] else 'ok'}  nodes {row['nodes']:>3}  {row['facts']}"
                      + "".join(f"\n    {p}" for p in row["problems"]), flush=True)
        if args.json_out:
            report = {"comfyui": version, "frontend": frontend, "workflows": rows}
            args.json_out.write_text(json.dumps(report, indent=1))
    finally:
        if browser is not None:
            browser.close()
        host_e2e.harness("stop", "--port", str(args.port), check=False)
    total = len(paths) - skipped
    print(f"ComfyUI {version}, frontend {frontend or '?'}: {total - failures}/{total} workflows look finished"
          + (f" ({skipped} skipped: core nodes this ComfyUI lacks)" if skipped else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
