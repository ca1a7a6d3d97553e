"""Every shipped workflow against the node definitions: types exist, links fit, widgets fit.

Core node definitions come from a real ComfyUI's /object_info: ComfyUI 0.33.0, the primary target
(tests/fixtures/core_nodes_v033.json, recorded by tools/record_families.py core-nodes), and
ComfyUI 0.3.64, the oldest supported (tests/fixtures/core_nodes.json), where every workflow except
those in OLDEST_HOST_SKIPS must validate too. The pack's nodes come from their live INPUT_TYPES.
"""

from __future__ import annotations

import json

import pytest
from node_helpers import ROOT, load_pack

PRIMARY, OLDEST = "v0.33.0", "v0.3.64"
CORE = {PRIMARY: json.loads((ROOT / "tests/fixtures/core_nodes_v033.json").read_text())["nodes"],
        OLDEST: json.loads((ROOT / "tests/fixtures/core_nodes.json").read_text())["nodes"]}
# Workflows that need a newer ComfyUI than the oldest supported (README: FLUX.2 needs FLUX.2 nodes).
OLDEST_HOST_SKIPS = {"pid_flux2_klein_4k", "pid_flux2_dev_stop45of50_4k"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
MODEL_EXT = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".gguf")
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
# Combos of our nodes whose choices come from ComfyUI at run time (fallback lists in tests).
HOST_COMBOS = {("PiD_StopSigma", "sampler_name"): ("KSamplerAdvanced", "sampler_name"),
               ("PiD_StopSigma", "scheduler"): ("KSamplerAdvanced", "scheduler")}
FILE_COMBOS = {("PiD_LoadModel", "checkpoint"): "pid", ("PiD_LoadModel", "text_encoder"): "text_encoders"}
LDM_WORKFLOWS = {"pid_flux1_dev_stop24of28_2048", "pid_zimage_turbo_x0_4k", "pid_sdxl_stop26of30_4k",
                 "pid_sd3_stop24of28_4k", "pid_flux2_klein_4k", "pid_qwen_image_stop44of50_4k",
                 "pid_flux2_dev_stop45of50_4k"}


def _legacy_combo(spec):
    """V3 nodes list a combo as ["COMBO", {"options": [...], ...}]; V1 as [[...], {...}]."""
    if spec and spec[0] == "COMBO":
        opts = dict(spec[1]) if len(spec) > 1 else {}
        return [opts.pop("options", []), opts]
    return spec


def definitions(core: dict) -> dict:
    defs = {}
    for name, d in core.items():
        inputs = {sec: {k: _legacy_combo(v) for k, v in specs.items()} for sec, specs in d["input"].items()}
        defs[name] = {**d, "input": inputs}
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for (node, inp), (core_node, core_inp) in HOST_COMBOS.items():
            if node == name:
                spec["required"][inp] = core[core_node]["input"]["required"][core_inp]
        for (node, inp), folder in FILE_COMBOS.items():
            if node == name:
                spec["required"][inp] = [{"files": folder}]
        defs[name] = {"input": spec, "input_order": {s: list(v) for s, v in spec.items()},
                      "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES)}
    return defs


HOST_DEFS = {host: definitions(core) for host, core in CORE.items()}
DEFS = HOST_DEFS[PRIMARY]


def spec_of(ntype, name, defs=DEFS):
    d = defs[ntype]["input"]
    return d.get("required", {}).get(name) or d.get("optional", {}).get(name)


def is_widget(spec):
    return isinstance(spec[0], (list, dict)) or spec[0] in WIDGET_TYPES


def widget_specs(ntype, defs=DEFS):
    d = defs[ntype]
    return [(n, d["input"][s][n]) for s in ("required", "optional")
            for n in d["input_order"].get(s, []) if is_widget(d["input"][s][n])]


def check_value(ntype, name, spec, value):
    t, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    where = f"{ntype}.{name}={value!r}"
    if isinstance(t, dict):  # a list of files: any file name of the right kind
        assert isinstance(value, str) and value, where
        if t["files"] not in ("input",):
            assert value.endswith(MODEL_EXT), where
        return
    if isinstance(t, list):
        assert value in t, f"{where} not in {t}"
        return
    if t == "BOOLEAN":
        assert isinstance(value, bool), where
    elif t == "STRING":
        assert isinstance(value, str), where
    else:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        if t == "INT":
            assert isinstance(value, int), where
        assert opts.get("min", -float("inf")) <= value <= opts.get("max", float("inf")), where


@pytest.fixture(params=[(h, p) for h in HOST_DEFS for p in WORKFLOWS], ids=lambda hp: f"{hp[0]}-{hp[1].stem}")
def hosted(request):
    """(ComfyUI version, its node definitions, workflow name, workflow)."""
    host, path = request.param
    if host == OLDEST and path.stem in OLDEST_HOST_SKIPS:
        pytest.skip(f"{path.stem} needs a newer ComfyUI than {OLDEST}")
    return host, HOST_DEFS[host], path.stem, json.loads(path.read_text())


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.stem)
def workflow(request):
    return request.param.stem, json.loads(request.param.read_text())


def test_workflows_exist():
    assert {p.stem for p in WORKFLOWS} >= LDM_WORKFLOWS | {"pid_upscale_2k_to_4k",
                                                           "pid_decode_saved_latent"}


def test_node_types_exist_and_a_note_explains(hosted):
    host, defs, _, wf = hosted
    types = [n["type"] for n in wf["nodes"]]
    unknown = [t for t in types if t not in defs and t not in FRONTEND_ONLY]
    assert not unknown, f"node types unknown to ComfyUI {host}: {unknown}"
    notes = [n for n in wf["nodes"] if n["type"] in FRONTEND_ONLY]
    assert notes and all("models/" in n["widgets_values"][0] or "ComfyUI/" in n["widgets_values"][0]
                         for n in notes)
    assert len({n["id"] for n in wf["nodes"]}) == len(wf["nodes"])


def test_links_connect_matching_types(hosted):
    _, defs, _, wf = hosted
    nodes = {n["id"]: n for n in wf["nodes"]}
    for lid, src, src_slot, dst, dst_slot, ltype in wf["links"]:
        s, d = nodes[src], nodes[dst]
        assert defs[s["type"]]["output"][src_slot] == ltype == s["outputs"][src_slot]["type"]
        assert lid in s["outputs"][src_slot]["links"]
        inp = d["inputs"][dst_slot]
        assert inp["link"] == lid
        name = (inp.get("widget") or {}).get("name", inp["name"])
        spec = spec_of(d["type"], name, defs)
        assert spec is not None, f"{d['type']} has no input {name}"
        expected = spec[0]
        assert expected == ltype or (isinstance(expected, list) and ltype == "COMBO"), \
            f"link {lid}: {ltype} into {d['type']}.{name} ({expected})"


def test_required_sockets_are_connected(hosted):
    _, defs, _, wf = hosted
    for n in wf["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        connected = {(i.get("widget") or {}).get("name", i["name"]) for i in n["inputs"] if i["link"]}
        for name, spec in defs[n["type"]]["input"].get("required", {}).items():
            if not is_widget(spec):
                assert name in connected, f"{n['type']} (node {n['id']}): '{name}' not connected"


def test_widget_values_fit(hosted):
    _, defs, _, wf = hosted
    for n in wf["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        values, i = n.get("widgets_values", []), 0
        optional = defs[n["type"]]["input"].get("optional", {})
        for name, spec in widget_specs(n["type"], defs):
            if i == len(values) and name in optional:
                break   # an optional widget added after the file was saved: the frontend keeps its default
            assert i < len(values), f"{n['type']}: no value for {name}"
            check_value(n["type"], name, spec, values[i])
            i += 1
            opts = spec[1] if len(spec) > 1 else {}
            if opts.get("control_after_generate"):
                assert values[i] in ("fixed", "increment", "decrement", "randomize")
                i += 1
            if opts.get("image_upload"):
                i += 1
        assert i == len(values), f"{n['type']}: {len(values)} values for {i} widgets"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflows_carry_every_pack_widget(path):
    """An old saved file may lack an optional widget added later (the frontend fills in the default),
    but the files this pack ships must be current: every widget and socket of our own nodes."""
    wf = json.loads(path.read_text())
    for n in wf["nodes"]:
        if not n["type"].startswith("PiD"):
            continue
        want = sum(2 if len(spec) > 1 and spec[1].get("control_after_generate") else 1
                   for _, spec in widget_specs(n["type"]))
        assert len(n["widgets_values"]) == want, (
            f"{path.name}: {n['type']} (node {n['id']}) has {len(n['widgets_values'])} widget values, "
            f"the node has {want}: run tools/make_workflows.py")
        spec = DEFS[n["type"]]["input"]
        sockets = {name for sec in ("required", "optional") for name, sp in spec.get(sec, {}).items()
                   if not is_widget(sp)}
        assert sockets <= {i["name"] for i in n["inputs"]}, f"{path.name}: {n['type']} misses sockets"
        assert len(n["outputs"]) == len(DEFS[n["type"]]["output"]), f"{path.name}: {n['type']} outputs"


def _linked_source(wf, node, name):
    nodes = {n["id"]: n for n in wf["nodes"]}
    for inp in node["inputs"]:
        if (inp.get("widget") or {}).get("name", inp["name"]) == name and inp["link"]:
            link = next(lk for lk in wf["links"] if lk[0] == inp["link"])
            return nodes[link[1]], link[2]
    return None


def _widget(node, name):
    names = [n for n, _ in widget_specs(node["type"])]
    values, i = node["widgets_values"], 0
    for n, spec in widget_specs(node["type"]):
        if n == name:
            return values[i]
        i += 2 if (len(spec) > 1 and spec[1].get("control_after_generate")) else 1
    raise KeyError(f"{name} not in {names}")


def test_ldm_workflows_stop_sigma_matches_the_sampler(workflow):
    name, wf = workflow
    if name not in LDM_WORKFLOWS:
        pytest.skip("no LDM in this workflow")
    by_type = {}
    for n in wf["nodes"]:
        by_type.setdefault(n["type"], []).append(n)
    (stop,), (dec,) = by_type["PiD_StopSigma"], by_type["PiD_DecodeLatent"]
    assert _linked_source(wf, dec, "sigma")[0] is stop
    assert _linked_source(wf, dec, "model") is not None  # latent_format auto reads the MODEL
    for ks in by_type.get("KSamplerAdvanced", []):
        assert _widget(ks, "return_with_leftover_noise") == "enable"
        for w in ("steps", "end_at_step"):
            src_ks, src_stop = _linked_source(wf, ks, w), _linked_source(wf, stop, w)
            assert src_ks == src_stop and (src_ks is not None or _widget(ks, w) == _widget(stop, w))
        for w in ("sampler_name", "scheduler"):
            assert _widget(ks, w) == _widget(stop, w)
        assert _linked_source(wf, ks, "model") == _linked_source(wf, stop, "model")
    if "KSamplerAdvanced" not in by_type:  # custom sampler: Stop Sigma reads the same SIGMAS
        (run,) = by_type["SamplerCustomAdvanced"]
        assert _linked_source(wf, run, "sigmas") == _linked_source(wf, stop, "sigmas")


def test_pid_loaders_name_the_files_users_have():
    """Workflows name Comfy-Org repack files (ComfyUI's own PiD template uses these names), in the
    folders ComfyUI keeps them, so they validate without renaming anything."""
    from node_helpers import pack_module
    files = pack_module("pid_core.files.model_files")
    loaders = [(wf.name, n["widgets_values"]) for wf in WORKFLOWS
               for n in json.loads(wf.read_text())["nodes"] if n["type"] == "PiD_LoadModel"]
    assert len(loaders) == len(WORKFLOWS)
    for wf, (checkpoint, text_encoder, *_rest) in loaders:
        decoder, gemma = files.known_file(checkpoint), files.known_file(text_encoder)
        assert decoder is not None and decoder.repo == "Comfy-Org/PixelDiT", (wf, checkpoint)
        assert decoder.folder == "diffusion_models" and decoder.layout == "bf16" and decoder.current
        assert gemma is not None and gemma.folder == "text_encoders", (wf, text_encoder)


# Layout as ComfyUI's frontend draws it: LiteGraph puts a node's 30 px title bar ABOVE its pos.
TITLE_BAR = 30
MIN_ZOOM = 0.6          # below ~0.57 the frontend draws no text (LiteGraph's low-quality zoom)
CANVAS = (1800, 957)    # the canvas of the 1800x1100 browser window tools/ui_check.py uses


def _box(node):
    """(x0, y0, x1, y1) of a node on the canvas, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_BAR, x + w, y + h


def test_no_two_nodes_overlap(workflow):
    name, wf = workflow
    boxes = [(f"{n['id']} ({n.get('title') or n['type']})", _box(n)) for n in wf["nodes"]]
    for i, (a_name, a) in enumerate(boxes):
        for b_name, b in boxes[i + 1:]:
            dx, dy = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
            assert dx <= 0 or dy <= 0, f"{name}: node {a_name} overlaps node {b_name} by {dx}x{dy} px"


def test_saved_view_is_readable(workflow):
    """A workflow opened normally shows its saved extra.ds: zoomed in far enough for text."""
    name, wf = workflow
    ds = wf["extra"]["ds"]
    assert ds["scale"] >= MIN_ZOOM, f"{name}: saved zoom {ds['scale']} < {MIN_ZOOM}"


def test_fitted_view_is_readable(workflow):
    """The template browser ignores extra.ds and fits the graph (the frontend's fitView: zoom 0.75 x
    canvas / graph bounds + 10 px padding each side): the graph must be compact enough for text."""
    name, wf = workflow
    boxes = [_box(n) for n in wf["nodes"]]
    width = max(b[2] for b in boxes) - min(b[0] for b in boxes) + 20
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes) + 20
    zoom = 0.75 * min(CANVAS[0] / width, CANVAS[1] / height)
    assert zoom >= MIN_ZOOM, f"{name}: {width}x{height} px fits at zoom {zoom:.2f} < {MIN_ZOOM}"
