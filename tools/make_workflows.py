"""Write the example workflows in workflows/ (ComfyUI UI format: nodes + links).

    .venv/bin/python tools/make_workflows.py        # rewrites workflows/*.json

Node definitions come from tests/fixtures/core_nodes.json (recorded from a real ComfyUI) and from
the pack's own node classes, so every socket, widget order and link type matches what ComfyUI
expects; tests/test_workflows.py checks the result independently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from pack_import import import_pack

ROOT = Path(__file__).resolve().parents[1]
RELEASES: dict = {}  # release -> Comfy-Org file name, filled from the pack's tables in main()
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
GEMMA = "gemma_2_2b_it_elm_bf16.safetensors"

# Layout. LiteGraph draws a node's 30 px title bar ABOVE its pos, and ComfyUI's frontend grows a
# node to node.computeSize() on load: HEIGHT holds those heights (the same in frontends 1.49.6 and
# 1.58.1, read by tools/ui_check.py), so a saved node is as tall as its widgets (a linked multiline
# prompt keeps the frontend's own 50 px row) and a column of nodes does not overlap. Widths show
# whole labels and values (PiD Load Model: the longest shipped checkpoint name). Each graph must fit
# a 1800x1100 browser window (a 1800x957 canvas) at zoom >= MIN_ZOOM when the template browser
# fits it (zoom 0.75 * window / graph) and is saved with a view that shows it all.
TITLE, GAP, SPACE = 30, 30, 40      # title bar; free px above a title bar; between columns
VIEW, MIN_ZOOM = (1800, 957), 0.6
CHROME = (70, 100, 70)              # the frontend's side bar, top bars and bottom tool bar over the canvas
HEIGHT = {"UNETLoader": 82, "DualCLIPLoader": 130, "CLIPLoader": 106, "CheckpointLoaderSimple": 98,
          "ModelSamplingAuraFlow": 58, "PrimitiveInt": 82, "PrimitiveStringMultiline": 120,
          "CLIPTextEncode": 88, "FluxGuidance": 58, "ConditioningZeroOut": 26, "EmptySD3LatentImage": 106,
          "EmptyLatentImage": 106, "EmptyFlux2LatentImage": 106, "KSamplerAdvanced": 334, "CFGGuider": 98,
          "BasicGuider": 46, "RandomNoise": 82, "KSamplerSelect": 58, "Flux2Scheduler": 106,
          "SplitSigmas": 78, "SamplerCustomAdvanced": 106, "LoadImage": 326, "VAELoader": 58,
          "LoadLatent": 58, "PiD_LoadModel": 198, "PiD_StopSigma": 174, "PiD_DecodeLatent": 364,
          "PiD_Upscale2Kto4K": 340, "SaveImage": 520}
LEFT, WIDE, MID, NARROW = 510, 490, 340, 320   # loaders (two step counts side by side); PiD Load
#   Model, Save Image and notes; samplers and PiD nodes; conditioning


class Column:
    """Nodes stacked top to bottom at x, each GAP px below the previous one's bottom + the next title."""

    def __init__(self, x, width, y=40):
        self.x, self.width, self.y = x, width, y

    @property
    def right(self):
        return self.x + self.width + SPACE

    def at(self, ntype, height=None):
        """(pos, size) for the next node of type ``ntype`` (its frontend height unless given)."""
        height = height or HEIGHT[ntype]
        place = ((self.x, self.y), (self.width, height))
        self.y += height + GAP + TITLE
        return place

    def pair(self, left, right):
        """Two nodes side by side: [(pos, size), (pos, size)]."""
        width = (self.width - 20) // 2
        height = max(HEIGHT[left], HEIGHT[right])
        places = [((self.x, self.y), (width, HEIGHT[left])), ((self.x + width + 20, self.y), (width, HEIGHT[right]))]
        self.y += height + GAP + TITLE
        return places


def columns(*widths, x=20):
    out = []
    for w in widths:
        out.append(Column(x, w))
        x = out[-1].right
    return out


def note_height(text, width):
    """Height a MarkdownNote needs for ``text`` at ``width`` (its 10 px text; generous, checked by
    tools/ui_check.py, which fails a note whose text does not fit)."""
    chars = max(1, int((width - 24) / 5.2))        # characters per line
    lines = sum(-(-len(par) // chars) + 1 for par in text.strip().split("\n\n"))
    return 50 + 12 * lines


def _pack():
    return import_pack("comfyui_pid_tools")


def node_defs() -> dict:
    core = json.loads((ROOT / "tests/fixtures/core_nodes.json").read_text())
    defs = dict(core["nodes"], **core["newer_comfyui"]["nodes"])
    for name, cls in _pack().NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        defs[name] = {"input": spec, "input_order": {s: list(v) for s, v in spec.items()},
                      "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES)}
    return defs


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or isinstance(spec[0], dict) or spec[0] in WIDGETS


class Graph:
    def __init__(self, defs):
        self.defs, self.nodes, self.links = defs, [], []
        self.widget_index = {}

    def node(self, ntype, pos, size=(320, 160), title=None, **widgets):
        d = self.defs[ntype]
        n = {"id": len(self.nodes) + 1, "type": ntype, "pos": list(pos), "size": list(size),
             "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
             "properties": {"Node name for S&R": ntype}, "widgets_values": []}
        if title:
            n["title"] = title
        for section in ("required", "optional"):
            for name in d["input_order"].get(section, []):
                spec = d["input"][section][name]
                if not is_widget(spec):
                    n["inputs"].append({"name": name, "type": spec[0], "link": None})
                    continue
                opts = spec[1] if len(spec) > 1 else {}
                first = spec[0][0] if isinstance(spec[0], list) and spec[0] else None
                value = widgets.pop(name) if name in widgets else opts.get("default", first)
                self.widget_index[(n["id"], name)] = len(n["widgets_values"])
                n["widgets_values"].append("" if value is None and spec[0] == "STRING" else value)
                if opts.get("control_after_generate"):
                    n["widgets_values"].append("fixed")
                if opts.get("image_upload"):
                    n["widgets_values"].append("image")
        assert not widgets, f"{ntype}: unknown widgets {widgets}"
        for slot, (otype, oname) in enumerate(zip(d["output"], d["output_name"])):
            n["outputs"].append({"name": oname, "type": otype, "links": [], "slot_index": slot})
        self.nodes.append(n)
        return n

    def note(self, text, pos, size=(420, 360)):
        n = {"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": list(pos), "size": list(size),
             "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
             "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        self.nodes.append(n)

    def link(self, src, out, dst, name):
        out_slot = out if isinstance(out, int) else [o["name"] for o in src["outputs"]].index(out)
        otype = src["outputs"][out_slot]["type"]
        lid = len(self.links) + 1
        slot = next((i for i, inp in enumerate(dst["inputs"]) if inp["name"] == name), None)
        if slot is None:  # a widget fed by a link: the frontend adds a socket for it
            dst["inputs"].append({"name": name, "type": otype, "widget": {"name": name}, "link": None})
            slot = len(dst["inputs"]) - 1
        dst["inputs"][slot]["link"] = lid
        if src["type"].startswith("Primitive") and (dst["id"], name) in self.widget_index:
            # the frontend shows a linked widget with the value it receives
            dst["widgets_values"][self.widget_index[(dst["id"], name)]] = src["widgets_values"][0]
        src["outputs"][out_slot]["links"].append(lid)
        self.links.append([lid, src["id"], out_slot, dst["id"], slot, otype])

    def camera(self):
        """The saved view (extra.ds): the whole graph as large as it fits the canvas beside the
        frontend's bars, centred; the template browser ignores it and fits the graph itself."""
        x0 = min(n["pos"][0] for n in self.nodes)
        y0 = min(n["pos"][1] - TITLE for n in self.nodes)
        x1 = max(n["pos"][0] + n["size"][0] for n in self.nodes)
        y1 = max(n["pos"][1] + n["size"][1] for n in self.nodes)
        free = (VIEW[0] - CHROME[0] - 20, VIEW[1] - CHROME[1] - CHROME[2] - 20)
        fitted = 0.75 * min(VIEW[0] / (x1 - x0 + 20), VIEW[1] / (y1 - y0 + 20))   # the frontend's fitView
        assert fitted >= MIN_ZOOM, f"the graph ({x1 - x0}x{y1 - y0}) fits at zoom {fitted:.2f} < {MIN_ZOOM}"
        scale = min(1.0, int(100 * min(free[0] / (x1 - x0), free[1] / (y1 - y0))) / 100)
        left = CHROME[0] + 10 + (free[0] - scale * (x1 - x0)) / 2
        top = CHROME[1] + 10 + (free[1] - scale * (y1 - y0)) / 2
        return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}

    def json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
                "extra": {"ds": self.camera()}, "version": 0.4}


def pid_tail(g, model_file, latent_src, latent_out, prompt, sigma_src, ldm_model, *, load_at, decode_at, save_at,
             filename_prefix="PiD"):
    """PiD Load Model + PiD Decode Latent + Save Image, wired to a latent and a stop sigma."""
    loader = g.node("PiD_LoadModel", *load_at, checkpoint=model_file, text_encoder=GEMMA)
    dec = g.node("PiD_DecodeLatent", *decode_at)
    g.link(loader, "pid_model", dec, "pid_model")
    g.link(latent_src, latent_out, dec, "latent")
    g.link(prompt, 0, dec, "prompt")
    if sigma_src is not None:
        g.link(sigma_src, "sigma", dec, "sigma")
    if ldm_model is not None:
        g.link(ldm_model[0], ldm_model[1], dec, "model")
    save = g.node("SaveImage", *save_at, filename_prefix=filename_prefix)
    g.link(dec, "image", save, "images")
    return dec


def ldm_graph(defs, *, note, model_nodes, text, sampler, steps, stop, latent_node, pid_file, prefix,
              negative_text=None):
    """Prompt -> LDM with KSamplerAdvanced stopped at `stop`/`steps` -> PiD Stop Sigma -> PiD.

    Columns: loaders, prompt, step counts and PiD Load Model | conditioning, latent and PiD Stop
    Sigma | the sampler and PiD Decode Latent | Save Image and the note."""
    g = Graph(defs)
    a, b, c, d = columns(LEFT, NARROW, MID, WIDE)
    model, model_out, clip, clip_out = model_nodes(g, a, b)
    prompt = g.node("PrimitiveStringMultiline", *a.at("PrimitiveStringMultiline"), title="Prompt (LDM and PiD)",
                    value=text)
    steps_at, stop_at = a.pair("PrimitiveInt", "PrimitiveInt")
    steps_n = g.node("PrimitiveInt", *steps_at, title="Total steps", value=steps)
    stop_n = g.node("PrimitiveInt", *stop_at, title="Stop at step", value=stop)
    pos = g.node("CLIPTextEncode", *b.at("CLIPTextEncode"), title="Positive")
    g.link(clip, clip_out, pos, "clip")
    g.link(prompt, 0, pos, "text")
    positive = pos
    if sampler.get("guidance") is not None:
        positive = g.node("FluxGuidance", *b.at("FluxGuidance"), guidance=sampler["guidance"])
        g.link(pos, 0, positive, "conditioning")
    if negative_text is None:
        neg = g.node("ConditioningZeroOut", *b.at("ConditioningZeroOut"), title="Negative (unused at cfg 1)")
        g.link(pos, 0, neg, "conditioning")
    else:
        neg = g.node("CLIPTextEncode", *b.at("CLIPTextEncode", 110), title="Negative", text=negative_text)
        g.link(clip, clip_out, neg, "clip")
    latent = latent_node(g, b)
    ks = g.node("KSamplerAdvanced", *c.at("KSamplerAdvanced"), add_noise="enable", noise_seed=42,
                cfg=sampler["cfg"], sampler_name=sampler["name"], scheduler=sampler["scheduler"],
                steps=steps, start_at_step=0, end_at_step=stop, return_with_leftover_noise="enable")
    for src, out, name in ((model, model_out, "model"), (positive, 0, "positive"), (neg, 0, "negative"),
                           (latent, 0, "latent_image"), (steps_n, 0, "steps"), (stop_n, 0, "end_at_step")):
        g.link(src, out, ks, name)
    stop_sigma = g.node("PiD_StopSigma", *b.at("PiD_StopSigma"), sampler_name=sampler["name"],
                        scheduler=sampler["scheduler"], steps=steps, end_at_step=stop,
                        return_with_leftover_noise="enable")
    for src, out, name in ((model, model_out, "model"), (steps_n, 0, "steps"), (stop_n, 0, "end_at_step")):
        g.link(src, out, stop_sigma, name)
    pid_tail(g, pid_file, ks, 0, prompt, stop_sigma, (model, model_out), load_at=a.at("PiD_LoadModel"),
             decode_at=c.at("PiD_DecodeLatent"), save_at=d.at("SaveImage"), filename_prefix=prefix)
    g.note(note, *d.at("MarkdownNote", note_height(note, d.width)))
    return g


def unet_clip(unet, clip_name, clip_type, shift_node=None, shift=None):
    def build(g, a, b):
        unet_n = g.node("UNETLoader", *a.at("UNETLoader"), unet_name=unet, weight_dtype="default")
        model, out = unet_n, 0
        if shift_node:
            model = g.node(shift_node, *b.at(shift_node), shift=shift)
            g.link(unet_n, 0, model, "model")
        clip = g.node("CLIPLoader", *a.at("CLIPLoader"), clip_name=clip_name, type=clip_type)
        return model, out, clip, 0
    return build


def checkpoint(ckpt):
    def build(g, a, b):
        n = g.node("CheckpointLoaderSimple", *a.at("CheckpointLoaderSimple"), ckpt_name=ckpt)
        return n, 0, n, 1
    return build


def empty(ntype, w, h):
    return lambda g, col: g.node(ntype, *col.at(ntype), width=w, height=h, batch_size=1)


FILES_NOTE = """
**Files** (ComfyUI/models/...): PiD decoder `{pid}` in `diffusion_models/` (Comfy-Org,
huggingface.co/Comfy-Org/PixelDiT; or the official `checkpoints/{hf_dir}/model_ema_bf16.pth` from
huggingface.co/nvidia/PiD in `pid/`; PiD Load Model's *download* fetches either and checks it);
Gemma-2-2B text encoder `{gemma}` in `text_encoders/` (Comfy-Org). {ldm_files}
PiD weights: NVIDIA non-commercial licence (see the model card)."""


def note(title, body, pid_release, ldm_files):
    rel = RELEASES[pid_release]
    return f"## {title}\n\n{body.strip()}\n" + FILES_NOTE.format(
        pid=rel.filename, hf_dir=rel.hf_dir, gemma=GEMMA, ldm_files=ldm_files)


def flux1_dev(defs):
    return ldm_graph(
        defs, model_nodes=_flux_dev_models, text=PROMPTS["flux"], steps=28, stop=24,
        sampler={"name": "euler", "scheduler": "simple", "cfg": 1.0, "guidance": 3.5},
        latent_node=empty("EmptySD3LatentImage", 512, 512), pid_file=RELEASES["flux_2k"].filename,
        prefix="PiD_flux1_dev", note=note("FLUX.1-dev stopped at 24/28 -> PiD 2048", """
FLUX.1-dev samples a 512x512 latent but **stops at step 24 of 28** (KSamplerAdvanced,
`return_with_leftover_noise = enable`): PiD removes the remaining noise while it decodes, so the
last 4 LDM steps and the VAE decode are skipped. **PiD Stop Sigma** gets the same model, sampler,
scheduler, steps and end step (shared through the *Total steps* / *Stop at step* nodes) and
returns the exact sigma the latent sits at (0.3449 for FLUX `simple` 28/24), wired into PiD Decode
Latent. The 2k PiD checkpoint is trained for 512-px latents -> 2048 px (x4 of the VAE size).
The LDM MODEL is connected to PiD Decode Latent so `latent_format = auto` knows it is FLUX.1.
""", "flux_2k", "FLUX.1-dev `flux1-dev.safetensors` in `diffusion_models/`; `clip_l.safetensors` "
                 "and `t5xxl_fp16.safetensors` in `text_encoders/`. No VAE needed."))


def _flux_dev_models(g, a, b):
    unet = g.node("UNETLoader", *a.at("UNETLoader"), unet_name="flux1-dev.safetensors",
                  weight_dtype="default")
    clip = g.node("DualCLIPLoader", *a.at("DualCLIPLoader"), clip_name1="clip_l.safetensors",
                  clip_name2="t5xxl_fp16.safetensors", type="flux")
    return unet, 0, clip, 0


def zimage_turbo(defs):
    return ldm_graph(
        defs, model_nodes=unet_clip("z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors",
                                    "lumina2", "ModelSamplingAuraFlow", 3.0),
        text=PROMPTS["zimage"], steps=9, stop=9,
        sampler={"name": "res_multistep", "scheduler": "simple", "cfg": 1.0},
        latent_node=empty("EmptySD3LatentImage", 1024, 1024),
        pid_file=RELEASES["flux_v1.5"].filename, prefix="PiD_zimage_turbo",
        note=note("Z-Image-Turbo (finished, x0) -> PiD 4K (v1.5)", """
Z-Image-Turbo is distilled to ~9 steps, so it runs to the end (*Stop at step* = *Total steps*):
the latent is clean and **PiD Stop Sigma returns 0**. Z-Image uses the FLUX.1 VAE latent space,
so the FLUX v1.5 2kto4k PiD decodes its 1024-px latent straight to **4096 px**. `latent_format =
auto` reads the format from the connected MODEL. Needs a ComfyUI with Z-Image support.
""", "flux_v1.5", "`z_image_turbo_bf16.safetensors` in `diffusion_models/`, `qwen_3_4b.safetensors` "
                  "in `text_encoders/`."))


def sdxl(defs):
    return ldm_graph(
        defs, model_nodes=checkpoint("sd_xl_base_1.0.safetensors"), text=PROMPTS["sdxl"], steps=30,
        stop=26, sampler={"name": "euler", "scheduler": "normal", "cfg": 7.0},
        latent_node=empty("EmptyLatentImage", 1024, 1024), negative_text=PROMPTS["negative"],
        pid_file=RELEASES["sdxl_2kto4k"].filename, prefix="PiD_sdxl",
        note=note("SDXL stopped at 26/30 -> PiD 4K", """
SDXL samples 1024x1024 and stops at **step 26 of 30** with leftover noise. SDXL is an EPS model:
its sigmas are in the VE frame (here 0.3515 for `normal` 30/26, up to ~14.6); PiD Stop Sigma
reports them as they are and **PiD Decode Latent converts them** to PiD's VP frame. The SDXL
2kto4k PiD decodes the 128x128 latent to **4096 px**.
""", "sdxl_2kto4k", "`sd_xl_base_1.0.safetensors` in `checkpoints/`."))


def sd3(defs):
    return ldm_graph(
        defs, model_nodes=checkpoint("sd3_medium_incl_clips_t5xxlfp16.safetensors"),
        text=PROMPTS["sd3"], steps=28, stop=24,
        sampler={"name": "euler", "scheduler": "simple", "cfg": 4.5},
        latent_node=empty("EmptySD3LatentImage", 1024, 1024), negative_text=PROMPTS["negative"],
        pid_file=RELEASES["sd3_2kto4k"].filename, prefix="PiD_sd3",
        note=note("SD3 stopped at 24/28 -> PiD 4K", """
SD3-medium (shift 3) stops at **step 24 of 28** (sigma 0.3336 with `simple`) and the SD3 2kto4k
PiD decodes the 1024-px latent to **4096 px**. For 2048 px from a 512-px latent use
`pid_sd3_512_to_2048_4step_bf16.safetensors` instead. SD3 and FLUX latents both have 16 channels: the connected
MODEL tells `latent_format = auto` which it is.
""", "sd3_2kto4k", "`sd3_medium_incl_clips_t5xxlfp16.safetensors` in `checkpoints/`."))


def qwen_image(defs):
    return ldm_graph(
        defs, model_nodes=unet_clip("qwen_image_fp8_e4m3fn.safetensors",
                                    "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image",
                                    "ModelSamplingAuraFlow", 3.1),
        text=PROMPTS["qwen"], steps=50, stop=44, negative_text=" ",
        sampler={"name": "euler", "scheduler": "simple", "cfg": 2.5},
        latent_node=empty("EmptySD3LatentImage", 1024, 1024),
        pid_file=RELEASES["qwenimage_v1.5"].filename, prefix="PiD_qwen_image",
        note=note("Qwen-Image stopped at 44/50 -> PiD 4K (v1.5)", """
Qwen-Image (AuraFlow-style shift 3.1) stops at **step 44 of 50** (sigma 0.2971 with `simple`);
the Qwen-Image v1.5 PiD decodes the 1024-px latent to **4096 px**. Qwen-Image latents have 16
channels like FLUX/SD3 but another normalisation: keep the MODEL connected (or set
`latent_format = qwenimage`).
""", "qwenimage_v1.5", "`qwen_image_fp8_e4m3fn.safetensors` in `diffusion_models/`, "
                       "`qwen_2.5_vl_7b_fp8_scaled.safetensors` in `text_encoders/`."))


def flux2_loaders(g, a, b, unet_name, clip_name, prompt_key):
    """A FLUX.2 model and text encoder, the shared prompt and its positive encoding."""
    unet = g.node("UNETLoader", *a.at("UNETLoader"), unet_name=unet_name, weight_dtype="default")
    clip = g.node("CLIPLoader", *a.at("CLIPLoader"), clip_name=clip_name, type="flux2")
    prompt = g.node("PrimitiveStringMultiline", *a.at("PrimitiveStringMultiline"), title="Prompt (LDM and PiD)",
                    value=PROMPTS[prompt_key])
    pos = g.node("CLIPTextEncode", *b.at("CLIPTextEncode"), title="Positive")
    g.link(clip, 0, pos, "clip")
    g.link(prompt, 0, pos, "text")
    return unet, prompt, pos


def flux2_klein(defs):
    g = Graph(defs)
    a, b, c, d = columns(LEFT, NARROW, MID, WIDE)
    unet, prompt, pos = flux2_loaders(g, a, b, "flux-2-klein-4b.safetensors", "qwen_3_4b.safetensors", "flux2")
    neg = g.node("ConditioningZeroOut", *b.at("ConditioningZeroOut"), title="Negative (unused at cfg 1)")
    g.link(pos, 0, neg, "conditioning")
    guider = g.node("CFGGuider", *b.at("CFGGuider"), cfg=1.0)
    for src, name in ((unet, "model"), (pos, "positive"), (neg, "negative")):
        g.link(src, 0, guider, name)
    noise = g.node("RandomNoise", *b.at("RandomNoise"), noise_seed=42)
    sampler = g.node("KSamplerSelect", *b.at("KSamplerSelect"), sampler_name="euler")
    sched = g.node("Flux2Scheduler", *b.at("Flux2Scheduler"), steps=4, width=1024, height=1024)
    latent = g.node("EmptyFlux2LatentImage", *b.at("EmptyFlux2LatentImage"), width=1024, height=1024)
    run = g.node("SamplerCustomAdvanced", *c.at("SamplerCustomAdvanced"))
    for src, name in ((noise, "noise"), (guider, "guider"), (sampler, "sampler"), (sched, "sigmas"),
                      (latent, "latent_image")):
        g.link(src, 0, run, name)
    stop = g.node("PiD_StopSigma", *c.at("PiD_StopSigma"), sampler_name="euler", scheduler="simple",
                  steps=4, end_at_step=10000)
    g.link(unet, 0, stop, "model")
    g.link(sched, 0, stop, "sigmas")
    pid_tail(g, RELEASES["flux2_v1.5"].filename, run, "output", prompt, stop, (unet, 0),
             load_at=a.at("PiD_LoadModel"), decode_at=c.at("PiD_DecodeLatent"), save_at=d.at("SaveImage"),
             filename_prefix="PiD_flux2_klein")
    text = note("FLUX.2 [klein] 4B -> PiD 4K (v1.5)", """
FLUX.2 [klein] 4B is distilled to 4 steps and is sampled the way its ComfyUI template does it
(SamplerCustomAdvanced + Flux2Scheduler, cfg 1). It runs to the end, so **PiD Stop Sigma**, fed
the same SIGMAS with *end_at_step* past the last step, returns **0**. (To stop early, split the
sigmas with SplitSigmas, sample the high half and feed that half to PiD Stop Sigma.) FLUX.2
latents have 128 channels at 1/16 size: the FLUX.2 v1.5 PiD decodes 64x64 -> **4096 px**.
Needs a ComfyUI with FLUX.2 support (>= 0.3.72).
""", "flux2_v1.5", "`flux-2-klein-4b.safetensors` in `diffusion_models/`, `qwen_3_4b.safetensors` "
                   "in `text_encoders/`.")
    g.note(text, *d.at("MarkdownNote", note_height(text, d.width)))
    return g


def flux2_dev(defs):
    g = Graph(defs)
    a, b, c, d = columns(LEFT, NARROW, MID, WIDE)
    unet, prompt, pos = flux2_loaders(g, a, b, "flux2_dev_fp8mixed.safetensors",
                                      "mistral_3_small_flux2_bf16.safetensors", "flux2_dev")
    guidance = g.node("FluxGuidance", *b.at("FluxGuidance"), guidance=4.0)
    g.link(pos, 0, guidance, "conditioning")
    guider = g.node("BasicGuider", *b.at("BasicGuider"))
    g.link(unet, 0, guider, "model")
    g.link(guidance, 0, guider, "conditioning")
    noise_at, sampler_at = a.pair("RandomNoise", "KSamplerSelect")
    noise = g.node("RandomNoise", *noise_at, noise_seed=42)
    sampler = g.node("KSamplerSelect", *sampler_at, sampler_name="euler")
    sched = g.node("Flux2Scheduler", *b.at("Flux2Scheduler"), steps=50, width=1024, height=1024)
    split = g.node("SplitSigmas", *b.at("SplitSigmas"), title="Stop at step 45 of 50", step=45)
    g.link(sched, 0, split, "sigmas")
    latent = g.node("EmptyFlux2LatentImage", *b.at("EmptyFlux2LatentImage"), width=1024, height=1024)
    run = g.node("SamplerCustomAdvanced", *c.at("SamplerCustomAdvanced"), title="Sample steps 1-45")
    for src, out, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"),
                           (split, "high_sigmas", "sigmas"), (latent, 0, "latent_image")):
        g.link(src, out, run, name)
    stop = g.node("PiD_StopSigma", *c.at("PiD_StopSigma"), sampler_name="euler", scheduler="simple",
                  steps=50, end_at_step=45)
    g.link(unet, 0, stop, "model")
    g.link(split, "high_sigmas", stop, "sigmas")
    pid_tail(g, RELEASES["flux2_v1.5"].filename, run, "output", prompt, stop, (unet, 0),
             load_at=a.at("PiD_LoadModel"), decode_at=c.at("PiD_DecodeLatent"), save_at=d.at("SaveImage"),
             filename_prefix="PiD_flux2_dev")
    text = note("FLUX.2 [dev] stopped at step 45 of 50 -> PiD 4K (v1.5)", """
Sampled the way ComfyUI's FLUX.2 [dev] template does it (SamplerCustomAdvanced, FluxGuidance 4,
Flux2Scheduler), for 50 steps, but **SplitSigmas** hands the sampler only the first 45: it stops
with leftover noise, as upstream PiD hands FLUX.2 over at step 45 of 50. **PiD Stop Sigma** gets the
same high sigmas and returns their last entry, the sigma the latent sits at; PiD finishes the last
steps and decodes 64x64 FLUX.2 latents to **4096 px**. To stop elsewhere, change SplitSigmas' step
and PiD Stop Sigma's end_at_step together. Needs a ComfyUI with FLUX.2 support (>= 0.3.72).
""", "flux2_v1.5", "`flux2_dev_fp8mixed.safetensors` in `diffusion_models/`, "
                   "`mistral_3_small_flux2_bf16.safetensors` in `text_encoders/`.")
    g.note(text, *d.at("MarkdownNote", note_height(text, d.width)))
    return g


def upscale(defs):
    g = Graph(defs)
    a, b, c = columns(WIDE, MID, WIDE)
    image = g.node("LoadImage", *a.at("LoadImage"), image="example.png")
    vae = g.node("VAELoader", *a.at("VAELoader"), vae_name="ae.safetensors")
    loader = g.node("PiD_LoadModel", *a.at("PiD_LoadModel"),
                    checkpoint=RELEASES["flux_v1.5"].filename, text_encoder=GEMMA)
    up = g.node("PiD_Upscale2Kto4K", *b.at("PiD_Upscale2Kto4K"), prompt=PROMPTS["upscale"])
    g.link(loader, "pid_model", up, "pid_model")
    g.link(image, "IMAGE", up, "image")
    g.link(vae, 0, up, "vae")
    save = g.node("SaveImage", *c.at("SaveImage"), filename_prefix="PiD_upscale")
    g.link(up, "image", save, "images")
    text = note("PiD Upscale 2K -> 4K", """
Loads an image (about 2K, any aspect), encodes a copy at 1/4 of the target with the FLUX.1 VAE
and lets the FLUX v1.5 PiD decode it at x4: **long side 4096**, aspect kept, sides multiples of
64. *anchor_colors* (on) keeps the source's colours and broad tones exactly; PiD adds the detail.
Describe the image in *prompt* (PiD is text-conditioned; empty works too). No LDM is needed.
""", "flux_v1.5", "FLUX.1 VAE `ae.safetensors` in `vae/`; the image in ComfyUI/input/.")
    g.note(text, *c.at("MarkdownNote", note_height(text, c.width)))
    return g


def saved_latent(defs):
    g = Graph(defs)
    a, b, c = columns(WIDE, MID, WIDE)
    lat = g.node("LoadLatent", *a.at("LoadLatent"), latent="example_flux.latent")
    prompt = g.node("PrimitiveStringMultiline", *a.at("PrimitiveStringMultiline"), title="Prompt that made it",
                    value=PROMPTS["flux"])
    dec = pid_tail(g, RELEASES["flux_v1.5"].filename, lat, 0, prompt, None, None, load_at=a.at("PiD_LoadModel"),
                   decode_at=b.at("PiD_DecodeLatent"), save_at=c.at("SaveImage"),
                   filename_prefix="PiD_saved_latent")
    dec["widgets_values"][5] = "flux"  # latent_format: no MODEL here to tell
    text = note("Decode a saved latent with PiD (no LDM)", """
**Load Latent** reads a `.latent` file from ComfyUI/input/ (written by **Save Latent**, e.g. after
a KSampler). There is no MODEL to read the latent format from, so *latent_format* is set to
**flux** (FLUX.1 / Z-Image latents); change it to match the model that made the latent. A finished
latent has *sigma* 0; if it was saved from KSamplerAdvanced with leftover noise, type the sigma
PiD Stop Sigma showed for that run. Output: latent size x 32 (128x128 -> 4096).
""", "flux_v1.5", "The `.latent` file in ComfyUI/input/.")
    g.note(text, *c.at("MarkdownNote", note_height(text, c.width)))
    return g


PROMPTS = {
    "flux": "A red fox sitting in fresh snow at dawn, detailed fur, soft golden light, shallow depth "
            "of field",
    "zimage": "Portrait of an elderly fisherman mending a net on a wooden pier, weathered skin, "
              "overcast light, photorealistic",
    "sdxl": "A cozy reading nook with a window seat, rain on the glass, warm lamp light, "
            "highly detailed interior photo",
    "sd3": "A vintage red bicycle leaning against a blue door in a Mediterranean alley, sunny",
    "qwen": "A bustling night market in Taipei, neon signs with Chinese characters, steam rising "
            "from food stalls, cinematic",
    "flux2": "Macro photo of a dragonfly on a reed, morning dew drops, iridescent wings",
    "flux2_dev": "An old lighthouse on a rocky coast at sunset, waves breaking, warm light on the stones",
    "upscale": "",
    "negative": "blurry, low quality, watermark",
}

WORKFLOWS = {
    "pid_flux1_dev_stop24of28_2048": flux1_dev,
    "pid_zimage_turbo_x0_4k": zimage_turbo,
    "pid_sdxl_stop26of30_4k": sdxl,
    "pid_sd3_stop24of28_4k": sd3,
    "pid_flux2_klein_4k": flux2_klein,
    "pid_flux2_dev_stop45of50_4k": flux2_dev,
    "pid_qwen_image_stop44of50_4k": qwen_image,
    "pid_upscale_2k_to_4k": upscale,
    "pid_decode_saved_latent": saved_latent,
}


def main():
    defs = node_defs()
    files = sys.modules["comfyui_pid_tools.pid_core.files.model_files"]
    for rel in sys.modules["comfyui_pid_tools.pid_core.network.config"].RELEASES:
        if any(f.release == rel.name for f in files.REPACK_FILES):  # the name users have
            RELEASES[rel.name] = SimpleNamespace(filename=files.repack_name(rel.name),
                                                 hf_dir=rel.hf_dir)
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        (out / f"{name}.json").write_text(json.dumps(build(defs).json(), indent=1) + "\n")
        print(f"wrote workflows/{name}.json")


if __name__ == "__main__":
    main()
