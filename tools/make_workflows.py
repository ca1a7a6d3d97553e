"""Write the example workflows in workflows/ (ComfyUI UI format: nodes + links).

    .venv/bin/python tools/make_workflows.py        # rewrites workflows/*.json

Node definitions come from tests/fixtures/core_nodes.json (recorded from a real ComfyUI) and from
the pack's own node classes, so every socket, widget order and link type matches what ComfyUI
expects; tests/test_workflows.py checks the result independently.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
RELEASES: dict = {}  # release -> Comfy-Org file name, filled from the pack's tables in main()
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
GEMMA = "gemma_2_2b_it_elm_bf16.safetensors"


def _pack():
    spec = importlib.util.spec_from_file_location("comfyui_pid_tools", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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

    def json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4}


def pid_tail(g, model_file, latent_src, latent_out, prompt, sigma_src, ldm_model, x=1300,
             filename_prefix="PiD"):
    """PiD Load Model + PiD Decode Latent + Save Image, wired to a latent and a stop sigma."""
    loader = g.node("PiD_LoadModel", (x, 40), (380, 200), checkpoint=model_file, text_encoder=GEMMA)
    dec = g.node("PiD_DecodeLatent", (x, 300), (380, 420))
    g.link(loader, "pid_model", dec, "pid_model")
    g.link(latent_src, latent_out, dec, "latent")
    g.link(prompt, 0, dec, "prompt")
    if sigma_src is not None:
        g.link(sigma_src, "sigma", dec, "sigma")
    if ldm_model is not None:
        g.link(ldm_model[0], ldm_model[1], dec, "model")
    save = g.node("SaveImage", (x + 420, 40), (640, 680), filename_prefix=filename_prefix)
    g.link(dec, "image", save, "images")
    return dec


def ldm_graph(defs, *, note, model_nodes, text, sampler, steps, stop, latent_node, pid_file, prefix,
              negative_text=None):
    """Prompt -> LDM with KSamplerAdvanced stopped at `stop`/`steps` -> PiD Stop Sigma -> PiD."""
    g = Graph(defs)
    model, model_out, clip, clip_out = model_nodes(g)
    prompt = g.node("PrimitiveStringMultiline", (20, 420), (400, 200), title="Prompt (LDM and PiD)",
                    value=text)
    steps_n = g.node("PrimitiveInt", (20, 660), (260, 82), title="Total steps", value=steps)
    stop_n = g.node("PrimitiveInt", (20, 780), (260, 82), title="Stop at step", value=stop)
    pos = g.node("CLIPTextEncode", (460, 300), (380, 120), title="Positive")
    g.link(clip, clip_out, pos, "clip")
    g.link(prompt, 0, pos, "text")
    positive = pos
    if sampler.get("guidance") is not None:
        positive = g.node("FluxGuidance", (460, 460), (300, 60), guidance=sampler["guidance"])
        g.link(pos, 0, positive, "conditioning")
    if negative_text is None:
        neg = g.node("ConditioningZeroOut", (460, 560), (300, 30), title="Negative (unused at cfg 1)")
        g.link(pos, 0, neg, "conditioning")
    else:
        neg = g.node("CLIPTextEncode", (460, 560), (380, 120), title="Negative", text=negative_text)
        g.link(clip, clip_out, neg, "clip")
    latent = latent_node(g)
    ks = g.node("KSamplerAdvanced", (880, 40), (360, 480), add_noise="enable", noise_seed=42,
                cfg=sampler["cfg"], sampler_name=sampler["name"], scheduler=sampler["scheduler"],
                steps=steps, start_at_step=0, end_at_step=stop, return_with_leftover_noise="enable")
    for src, out, name in ((model, model_out, "model"), (positive, 0, "positive"), (neg, 0, "negative"),
                           (latent, 0, "latent_image"), (steps_n, 0, "steps"), (stop_n, 0, "end_at_step")):
        g.link(src, out, ks, name)
    stop_sigma = g.node("PiD_StopSigma", (880, 580), (360, 230), sampler_name=sampler["name"],
                        scheduler=sampler["scheduler"], steps=steps, end_at_step=stop,
                        return_with_leftover_noise="enable")
    for src, out, name in ((model, model_out, "model"), (steps_n, 0, "steps"), (stop_n, 0, "end_at_step")):
        g.link(src, out, stop_sigma, name)
    pid_tail(g, pid_file, ks, 0, prompt, stop_sigma, (model, model_out), filename_prefix=prefix)
    g.note(note, (20, 900), (820, 420))
    return g


def unet_clip(unet, clip_name, clip_type, shift_node=None, shift=None):
    def build(g):
        unet_n = g.node("UNETLoader", (20, 40), (380, 82), unet_name=unet, weight_dtype="default")
        model, out = unet_n, 0
        if shift_node:
            model = g.node(shift_node, (20, 160), (300, 60), shift=shift)
            g.link(unet_n, 0, model, "model")
        clip = g.node("CLIPLoader", (20, 260), (380, 106), clip_name=clip_name, type=clip_type)
        return model, out, clip, 0
    return build


def checkpoint(ckpt):
    def build(g):
        n = g.node("CheckpointLoaderSimple", (20, 40), (380, 100), ckpt_name=ckpt)
        return n, 0, n, 1
    return build


def empty(ntype, w, h):
    return lambda g: g.node(ntype, (460, 700), (300, 110), width=w, height=h, batch_size=1)


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


def _flux_dev_models(g):
    unet = g.node("UNETLoader", (20, 40), (380, 82), unet_name="flux1-dev.safetensors",
                  weight_dtype="default")
    clip = g.node("DualCLIPLoader", (20, 160), (380, 130), clip_name1="clip_l.safetensors",
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


def flux2_klein(defs):
    g = Graph(defs)
    unet = g.node("UNETLoader", (20, 40), (380, 82), unet_name="flux-2-klein-4b.safetensors",
                  weight_dtype="default")
    clip = g.node("CLIPLoader", (20, 160), (380, 106), clip_name="qwen_3_4b.safetensors",
                  type="flux2")
    prompt = g.node("PrimitiveStringMultiline", (20, 420), (400, 200), title="Prompt (LDM and PiD)",
                    value=PROMPTS["flux2"])
    pos = g.node("CLIPTextEncode", (460, 40), (380, 120), title="Positive")
    g.link(clip, 0, pos, "clip")
    g.link(prompt, 0, pos, "text")
    neg = g.node("ConditioningZeroOut", (460, 200), (300, 30), title="Negative (unused at cfg 1)")
    g.link(pos, 0, neg, "conditioning")
    guider = g.node("CFGGuider", (460, 280), (300, 100), cfg=1.0)
    for src, name in ((unet, "model"), (pos, "positive"), (neg, "negative")):
        g.link(src, 0, guider, name)
    noise = g.node("RandomNoise", (460, 420), (300, 82), noise_seed=42)
    sampler = g.node("KSamplerSelect", (460, 540), (300, 60), sampler_name="euler")
    sched = g.node("Flux2Scheduler", (460, 640), (300, 110), steps=4, width=1024, height=1024)
    latent = g.node("EmptyFlux2LatentImage", (460, 790), (300, 110), width=1024, height=1024)
    run = g.node("SamplerCustomAdvanced", (880, 40), (360, 330))
    for src, name in ((noise, "noise"), (guider, "guider"), (sampler, "sampler"), (sched, "sigmas"),
                      (latent, "latent_image")):
        g.link(src, 0, run, name)
    stop = g.node("PiD_StopSigma", (880, 420), (360, 230), sampler_name="euler", scheduler="simple",
                  steps=4, end_at_step=10000)
    g.link(unet, 0, stop, "model")
    g.link(sched, 0, stop, "sigmas")
    pid_tail(g, RELEASES["flux2_v1.5"].filename, run, "output", prompt, stop, (unet, 0),
             filename_prefix="PiD_flux2_klein")
    g.note(note("FLUX.2 [klein] 4B -> PiD 4K (v1.5)", """
FLUX.2 [klein] 4B is distilled to 4 steps and is sampled the way its ComfyUI template does it
(SamplerCustomAdvanced + Flux2Scheduler, cfg 1). It runs to the end, so **PiD Stop Sigma**, fed
the same SIGMAS with *end_at_step* past the last step, returns **0**. (To stop early, split the
sigmas with SplitSigmas, sample the high half and feed that half to PiD Stop Sigma.) FLUX.2
latents have 128 channels at 1/16 size: the FLUX.2 v1.5 PiD decodes 64x64 -> **4096 px**.
Needs a ComfyUI with FLUX.2 support (>= 0.3.72).
""", "flux2_v1.5", "`flux-2-klein-4b.safetensors` in `diffusion_models/`, `qwen_3_4b.safetensors` "
                   "in `text_encoders/`."), (20, 940), (820, 400))
    return g


def flux2_dev(defs):
    g = Graph(defs)
    unet = g.node("UNETLoader", (20, 40), (380, 82), unet_name="flux2_dev_fp8mixed.safetensors",
                  weight_dtype="default")
    clip = g.node("CLIPLoader", (20, 160), (380, 106), clip_name="mistral_3_small_flux2_bf16.safetensors",
                  type="flux2")
    prompt = g.node("PrimitiveStringMultiline", (20, 300), (400, 200), title="Prompt (LDM and PiD)",
                    value=PROMPTS["flux2_dev"])
    pos = g.node("CLIPTextEncode", (460, 40), (380, 120), title="Positive")
    g.link(clip, 0, pos, "clip")
    g.link(prompt, 0, pos, "text")
    guidance = g.node("FluxGuidance", (460, 200), (300, 60), guidance=4.0)
    g.link(pos, 0, guidance, "conditioning")
    guider = g.node("BasicGuider", (460, 300), (300, 50))
    g.link(unet, 0, guider, "model")
    g.link(guidance, 0, guider, "conditioning")
    noise = g.node("RandomNoise", (460, 390), (300, 82), noise_seed=42)
    sampler = g.node("KSamplerSelect", (460, 510), (300, 60), sampler_name="euler")
    sched = g.node("Flux2Scheduler", (460, 610), (300, 110), steps=50, width=1024, height=1024)
    split = g.node("SplitSigmas", (460, 760), (300, 80), title="Stop at step 45 of 50", step=45)
    g.link(sched, 0, split, "sigmas")
    latent = g.node("EmptyFlux2LatentImage", (460, 880), (300, 110), width=1024, height=1024)
    run = g.node("SamplerCustomAdvanced", (880, 40), (360, 330), title="Sample steps 1-45")
    for src, out, name in ((noise, 0, "noise"), (guider, 0, "guider"), (sampler, 0, "sampler"),
                           (split, "high_sigmas", "sigmas"), (latent, 0, "latent_image")):
        g.link(src, out, run, name)
    stop = g.node("PiD_StopSigma", (880, 420), (360, 230), sampler_name="euler", scheduler="simple",
                  steps=50, end_at_step=45)
    g.link(unet, 0, stop, "model")
    g.link(split, "high_sigmas", stop, "sigmas")
    pid_tail(g, RELEASES["flux2_v1.5"].filename, run, "output", prompt, stop, (unet, 0),
             filename_prefix="PiD_flux2_dev")
    g.note(note("FLUX.2 [dev] stopped at step 45 of 50 -> PiD 4K (v1.5)", """
Sampled the way ComfyUI's FLUX.2 [dev] template does it (SamplerCustomAdvanced, FluxGuidance 4,
Flux2Scheduler), for 50 steps, but **SplitSigmas** hands the sampler only the first 45: it stops
with leftover noise, as upstream PiD hands FLUX.2 over at step 45 of 50. **PiD Stop Sigma** gets the
same high sigmas and returns their last entry, the sigma the latent sits at; PiD finishes the last
steps and decodes 64x64 FLUX.2 latents to **4096 px**. To stop elsewhere, change SplitSigmas' step
and PiD Stop Sigma's end_at_step together. Needs a ComfyUI with FLUX.2 support (>= 0.3.72).
""", "flux2_v1.5", "`flux2_dev_fp8mixed.safetensors` in `diffusion_models/`, "
                   "`mistral_3_small_flux2_bf16.safetensors` in `text_encoders/`."), (20, 1030), (820, 400))
    return g


def upscale(defs):
    g = Graph(defs)
    image = g.node("LoadImage", (20, 40), (360, 360), image="example.png")
    vae = g.node("VAELoader", (20, 440), (360, 60), vae_name="ae.safetensors")
    loader = g.node("PiD_LoadModel", (20, 540), (380, 200),
                    checkpoint=RELEASES["flux_v1.5"].filename, text_encoder=GEMMA)
    up = g.node("PiD_Upscale2Kto4K", (440, 40), (380, 380), prompt=PROMPTS["upscale"])
    g.link(loader, "pid_model", up, "pid_model")
    g.link(image, "IMAGE", up, "image")
    g.link(vae, 0, up, "vae")
    save = g.node("SaveImage", (860, 40), (640, 680), filename_prefix="PiD_upscale")
    g.link(up, "image", save, "images")
    g.note(note("PiD Upscale 2K -> 4K", """
Loads an image (about 2K, any aspect), encodes a copy at 1/4 of the target with the FLUX.1 VAE
and lets the FLUX v1.5 PiD decode it at x4: **long side 4096**, aspect kept, sides multiples of
64. *anchor_colors* (on) keeps the source's colours and broad tones exactly; PiD adds the detail.
Describe the image in *prompt* (PiD is text-conditioned; empty works too). No LDM is needed.
""", "flux_v1.5", "FLUX.1 VAE `ae.safetensors` in `vae/`; the image in ComfyUI/input/."),
        (20, 780), (820, 360))
    return g


def saved_latent(defs):
    g = Graph(defs)
    lat = g.node("LoadLatent", (20, 40), (360, 82), latent="example_flux.latent")
    prompt = g.node("PrimitiveStringMultiline", (20, 160), (400, 200), title="Prompt that made it",
                    value=PROMPTS["flux"])
    dec = pid_tail(g, RELEASES["flux_v1.5"].filename, lat, 0, prompt, None, None, x=460,
                   filename_prefix="PiD_saved_latent")
    dec["widgets_values"][5] = "flux"  # latent_format: no MODEL here to tell
    g.note(note("Decode a saved latent with PiD (no LDM)", """
**Load Latent** reads a `.latent` file from ComfyUI/input/ (written by **Save Latent**, e.g. after
a KSampler). There is no MODEL to read the latent format from, so *latent_format* is set to
**flux** (FLUX.1 / Z-Image latents); change it to match the model that made the latent. A finished
latent has *sigma* 0; if it was saved from KSamplerAdvanced with leftover noise, type the sigma
PiD Stop Sigma showed for that run. Output: latent size x 32 (128x128 -> 4096).
""", "flux_v1.5", "The `.latent` file in ComfyUI/input/."), (20, 420), (420, 420))
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
