"""Every PiD node end to end on tiny random checkpoints, without ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_fp_close, with_envelope
from node_helpers import ROOT, FakeModel, FakeVAE, TinyTextEncoder, load_pack, pack_module
from safetensors.torch import save_file

pack = load_pack()
host = pack_module("nodes.host")
model_folders = pack_module("nodes.model_folders")
errors = pack_module("pid_core.errors")
random_weights = pack_module("pid_core.network.random_weights")
Options = pack_module("pid_core.decoding.decoder").DecodeOptions
LoadModel = pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"]
Decode = pack.NODE_CLASS_MAPPINGS["PiD_DecodeLatent"]
Upscale = pack.NODE_CLASS_MAPPINGS["PiD_Upscale2Kto4K"]

TINY_FILES = {"flux_v1.5": "pid_flux_v1.5.safetensors", "sdxl_2kto4k": "pid_sdxl_2kto4k.safetensors",
              "flux2_v1.5": "pid_flux2_v1.5.safetensors", "flux_2k": "pid_flux_2k.safetensors"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "pid").mkdir()
    for release, name in TINY_FILES.items():
        sd = random_weights.random_state_dict(random_weights.tiny_config(release), seed=1)
        save_file(sd, str(root / "pid" / name))
    return root


@pytest.fixture(autouse=True)
def use_models_dir(models_dir, monkeypatch):
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(models_dir))


def load(release="flux_v1.5", encoder="tiny"):
    clip = TinyTextEncoder() if encoder == "tiny" else encoder
    model, info = LoadModel().load(TINY_FILES[release], "none", "auto", clip=clip)
    return model, info


def decode(pid, latent, sigma=0.0, **kw):
    args = dict(prompt="a red fox", seed=0, steps=4, latent_format="auto", output_long_side=0)
    args.update(kw)
    return Decode().decode(pid, {"samples": latent}, sigma, **args)[0]


def test_mappings_ids_and_display_names():
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {
        "PiD_LoadModel": "PiD Load Model", "PiD_DecodeLatent": "PiD Decode Latent",
        "PiD_StopSigma": "PiD Stop Sigma", "PiD_Upscale2Kto4K": "PiD Upscale 2K→4K",
        "PiD_Size": "PiD Size"}
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert "PiDConditioning" not in pack.NODE_CLASS_MAPPINGS


@pytest.mark.parametrize("node_id", ["PiD_LoadModel", "PiD_DecodeLatent", "PiD_StopSigma",
                                     "PiD_Upscale2Kto4K", "PiD_Size"])
def test_node_metadata_and_tooltips(node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY == "PiD" and cls.DESCRIPTION and callable(getattr(cls(), cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            opts = entry[1] if len(entry) > 1 else {}
            assert len(opts.get("tooltip", "")) > 15, f"{node_id}.{name} has no useful tooltip"


def test_load_model_lists_files_and_reports_variant():
    names = LoadModel.INPUT_TYPES()["required"]["checkpoint"][0]
    assert set(TINY_FILES.values()) <= set(names)
    model, info = load("sdxl_2kto4k")
    assert "version v1" in info and "sdxl" in info and model.info.family == "sdxl"
    assert model.patcher is None  # no ComfyUI: plain torch, CPU
    assert model.info.latent_channels == 4


def test_load_model_without_files_explains(monkeypatch, tmp_path):
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(tmp_path))
    choices = LoadModel.INPUT_TYPES()["required"]["checkpoint"][0]
    assert choices == [pack_module("nodes.load_model").NO_FILES]
    with pytest.raises(errors.CheckpointReadError, match="models/pid"):
        LoadModel().load(choices[0], "none", "auto")


def test_decode_flux_shape_range_determinism():
    model, _ = load()
    latent = torch.randn(2, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    a = decode(model, latent, 0.3, latent_format="flux")
    b = decode(model, latent, 0.3, latent_format="flux")
    c = decode(model, latent, 0.3, latent_format="flux", seed=1)
    assert a.shape == (2, 128, 192, 3) and a.dtype == torch.float32  # BHWC, x32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_decode_auto_format_from_connected_model():
    model, _ = load()
    latent = torch.randn(1, 16, 4, 4)
    ref = decode(model, latent, latent_format="flux")
    assert torch.equal(decode(model, latent, model=FakeModel("Flux")), ref)
    with pytest.raises(errors.LatentMismatchError, match="Connect the LDM's MODEL"):
        decode(model, latent)  # flux/qwenimage look alike: ask
    with pytest.raises(errors.LatentMismatchError, match="'sd3'"):
        decode(model, latent, model=FakeModel("SD3"))  # v1.5 was not trained on SD3
    with pytest.raises(errors.LatentMismatchError, match="SD15"):
        decode(model, latent, model=FakeModel("SD15"))


def test_decode_latent_checkpoint_mismatch():
    model, _ = load("sdxl_2kto4k")
    with pytest.raises(errors.LatentMismatchError, match="expects 4-channel latents"):
        decode(model, torch.randn(1, 16, 4, 4))


def test_decode_sdxl_ve_sigma_and_flux2_factor():
    model, _ = load("sdxl_2kto4k")
    out = decode(model, torch.randn(1, 4, 4, 4) * 5, 5.0)  # VE sigma > 1 is fine for SDXL
    assert out.shape == (1, 128, 128, 3)
    model, _ = load("flux2_v1.5")
    assert decode(model, torch.randn(1, 128, 2, 3)).shape == (1, 128, 192, 3)  # x64


def test_decode_qwen_5d_latent_and_long_side():
    model, _ = load()
    out = decode(model, torch.randn(1, 16, 1, 4, 4), latent_format="qwenimage")
    assert out.shape == (1, 128, 128, 3)
    out = decode(model, torch.randn(1, 16, 4, 6), latent_format="flux", output_long_side=160)
    assert out.shape == (1, 112, 160, 3)  # aspect kept, multiples of 16


def test_decode_progress_and_interruption(monkeypatch):
    model, _ = load()
    bars = []
    real = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total: bars.append(real(total)) or bars[-1])
    decode(model, torch.randn(1, 16, 4, 4), latent_format="flux", steps=3)
    assert bars[-1].updates == 3 and bars[-1].current == bars[-1].total == 3

    class Interrupted(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted()

    monkeypatch.setattr(host, "check_interrupted", interrupt)
    with pytest.raises(Interrupted):
        decode(model, torch.randn(1, 16, 4, 4), latent_format="flux")
    assert len(calls) == 2  # stopped after the second network call


def test_decode_progress_messages_carry_previews(monkeypatch):
    """As KSampler: update_absolute(step, total, ("JPEG", image, max_size)) after network calls
    (the first always, then as the 1 % budget allows), none when the preview method is "none"."""
    model, _ = load()
    bars = []
    real = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total: bars.append(real(total)) or bars[-1])
    monkeypatch.setattr(host, "preview_image", lambda im: im.clone())   # the PIL conversion
    latent = torch.randn(1, 16, 4, 6)
    monkeypatch.setattr(host, "preview_side", lambda: None)
    decode(model, latent, latent_format="flux", steps=3)
    assert bars[-1].updates == 3 and bars[-1].previews == []
    monkeypatch.setattr(host, "preview_side", lambda: 64)
    decode(model, latent, latent_format="flux", steps=3)
    previews = bars[-1].previews
    assert bars[-1].updates == 3 and 1 <= len(previews) <= 3     # rationed to 1 % of the time
    assert all(p[0] == "JPEG" and p[2] == 64 and tuple(p[1].shape) == (43, 64, 3) for p in previews)


def test_preview_is_off_outside_comfyui():
    assert host.preview_side() is None


def test_decode_without_text_encoder_explains():
    model, _ = load(encoder=None)
    assert model.text_encoder is None
    with pytest.raises(errors.TextEncodingError, match="models/text_encoders"):
        decode(model, torch.randn(1, 16, 4, 4), latent_format="flux")


def test_decode_reports_colours_against_the_vae_and_anchors_on_request():
    model, _ = load()
    vae = FakeVAE(16)
    latent = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(4))
    args = dict(prompt="a red fox", seed=0, steps=2, latent_format="flux", output_long_side=0)
    node = Decode()
    bare_image, bare_report = node.decode(model, {"samples": latent}, 0.0, **args)
    assert bare_report.startswith("no colour check") and vae.encoded_shapes == []
    raw, report = node.decode(model, {"samples": latent}, 0.0, vae=vae, **args)
    assert torch.equal(raw, bare_image)                         # anchor_colors defaults to off
    assert vae.decoded_shapes == [(1, 16, 4, 6)]               # decoded once, at the VAE's own size
    assert "compared at 48x32" in report and "mean ΔE" in report and "shadows" in report
    assert "verdict: colour drift:" in report                 # a random net does not match
    assert report.splitlines()[-1].endswith("try anchor_colors")   # already on v1.5: no v1.5 advice
    v1_model, _ = load("flux_2k")
    _, v1_report = node.decode(v1_model, {"samples": latent}, 0.0, vae=FakeVAE(16), **args)
    assert v1_report.splitlines()[-1].endswith("try anchor_colors or the v1.5 checkpoint")
    fixed, fixed_report = node.decode(model, {"samples": latent}, 0.0, vae=vae, anchor_colors=True, **args)
    assert fixed.shape == raw.shape == (1, 128, 192, 3) and not torch.equal(fixed, raw)
    reference = torch.nn.functional.interpolate(vae.decode(latent).movedim(-1, 1), size=(128, 192))
    err = lambda img: (img.movedim(-1, 1).mean(dim=(2, 3)) - reference.mean(dim=(2, 3))).abs().max()  # noqa: E731
    assert err(fixed) < 0.25 * err(raw)                        # broad colours follow the VAE
    assert fixed_report.splitlines()[:-1] == report.splitlines()[:-1] or "after anchor_colors" in fixed_report
    after = float(fixed_report.split("after anchor_colors: mean ΔE ")[1].split(",")[0])
    before = float(report.split("mean ΔE ")[1].split(",")[0])
    assert after < before / 2
    _, noisy = node.decode(model, {"samples": latent}, 0.5, vae=vae, **args)
    assert "sigma 0.5 > 0, so the VAE decoded the noisy latent" in noisy


def test_decode_colour_check_with_a_video_vae():
    model, _ = load()
    vae = FakeVAE(16, latent_dim=3)                             # Qwen-Image: 5-D decode output
    image, report = Decode().decode(model, {"samples": torch.randn(1, 16, 1, 4, 4)}, 0.0, "x", 0, 1,
                                    "qwenimage", 0, vae=vae, anchor_colors=True)
    assert image.shape == (1, 128, 128, 3) and "compared at 32x32" in report


def test_upscale_keeps_aspect_and_anchors_colors():
    model, _ = load()
    vae = FakeVAE(16)
    image = torch.rand(2, 100, 150, 3, generator=torch.Generator().manual_seed(0))
    raw = Upscale().upscale(model, image, vae, "x", 256, False, 0, 2, "auto")[0]
    anchored = Upscale().upscale(model, image, vae, "x", 256, True, 0, 2, "auto")[0]
    assert raw.shape == anchored.shape == (2, 192, 256, 3)
    assert vae.encoded_shapes[0] == (2, 48, 64, 3)  # 1/4 of the output goes through the VAE
    src_mean = image.mean(dim=(1, 2))
    assert (anchored.mean(dim=(1, 2)) - src_mean).abs().max() < (raw.mean(dim=(1, 2)) - src_mean
                                                                  ).abs().max()


def test_upscale_with_a_video_vae_encodes_each_image(monkeypatch):
    model, _ = load()
    vae = FakeVAE(16, latent_dim=3)  # Qwen-Image's Wan 2.1 VAE: auto picks qwenimage
    formats = []
    real = model.decoder.decode
    monkeypatch.setattr(model.decoder, "decode",
                        lambda *a, **k: formats.append(k["latent_format"]) or real(*a, **k))
    out = Upscale().upscale(model, torch.rand(2, 64, 64, 3), vae, "", 128, True, 0, 1, "auto")[0]
    assert out.shape == (2, 128, 128, 3) and len(vae.encoded_shapes) == 2
    assert formats == ["qwenimage"]


def test_upscale_vae_family_must_fit_checkpoint():
    model, _ = load()
    with pytest.raises(errors.LatentMismatchError, match="4-channel 2-D"):
        Upscale().upscale(model, torch.rand(1, 64, 64, 3), FakeVAE(4), "", 256, True, 0, 1, "auto")
    model_v1, _ = load("flux_2k")  # v1 16ch: flux or sd3, and the VAE cannot tell them apart
    with pytest.raises(errors.LatentMismatchError, match="choose latent_format explicitly"):
        Upscale().upscale(model_v1, torch.rand(1, 64, 64, 3), FakeVAE(16), "", 256, True, 0, 1,
                          "auto")


def test_stop_sigma_output_feeds_decode():
    from test_nodes_stop_sigma import FluxSampling
    sigma, _ = pack.NODE_CLASS_MAPPINGS["PiD_StopSigma"]().compute(
        FakeModel("Flux", FluxSampling()), "euler", "simple", 28, 24, "enable")
    model, _ = load()
    out = decode(model, torch.randn(1, 16, 4, 4), sigma, model=FakeModel("Flux", FluxSampling()))
    assert out.shape == (1, 128, 128, 3) and isinstance(sigma, float)


def test_register_model_folder_is_a_no_op_without_comfyui():
    model_folders.register_model_folder()
    assert host.comfy_available() is False
    assert Path(model_folders.pid_dir()).name == "pid"


def test_decode_beyond_trained_envelope_is_tiled_not_refused(monkeypatch):
    """A size outside the checkpoint's envelope goes tiled (progress over tiles x steps)."""
    model, _ = load()
    model.decoder = with_envelope(model.decoder, (64, 96))
    bars = []
    real = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total: bars.append(real(total)) or bars[-1])
    out = decode(model, torch.randn(1, 16, 4, 6), latent_format="flux", steps=2)  # 128x192 > 96
    assert out.shape == (1, 128, 192, 3) and 0.0 <= out.min() and out.max() <= 1.0
    assert bars[-1].total > 2 and bars[-1].total % 2 == 0 and bars[-1].current == bars[-1].total


def test_decode_tile_size_forces_tiles(monkeypatch):
    model, _ = load()
    bars = []
    real = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total: bars.append(real(total)) or bars[-1])
    out = decode(model, torch.randn(1, 16, 4, 4), latent_format="flux", steps=2, tile_size=64)
    assert out.shape == (1, 128, 128, 3) and bars[-1].total == 9 * 2 == bars[-1].current
    with pytest.raises(errors.PiDInputError, match="tile 72x72 is invalid"):
        decode(model, torch.randn(1, 16, 4, 4), latent_format="flux", steps=1, tile_size=72)


def _sampling(type_name, base, sigma_max):
    """An object whose class hierarchy is named like ComfyUI's model_sampling classes."""
    return type(type_name, (type(base, (), {}),), {"sigma_max": sigma_max})()


def test_noise_frame_comes_from_the_models_sampling_type():
    """ComfyUI returns a flow model's stopped latent as x_t / (1 - s) and an EPS model's as
    x0 + s eps: with AuraFlow's MODEL (flow sampling, SDXL VAE) connected the SDXL latent is read
    as "comfy_flow", with SDXL's as "ve" (also the default without a MODEL)."""
    model, _ = load("sdxl_2kto4k")
    latent = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    auraflow = FakeModel("SDXL", _sampling("ModelSamplingDiscreteFlow", "CONST", 1.0))
    sdxl = FakeModel("SDXL", _sampling("ModelSamplingDiscrete", "EPS", 14.6))
    dec = model.decoder
    text = pack_module("nodes.text_encode").encode_prompt(model.text_encoder, ["a red fox"])
    ref = {frame: dec.decode(latent, 0.5, text, latent_format="sdxl", steps=4, options=Options(noise_frame=frame))
           for frame in ("comfy_flow", "ve")}
    assert not torch.equal(ref["comfy_flow"], ref["ve"])
    assert torch.equal(decode(model, latent, 0.5, model=auraflow), ref["comfy_flow"].movedim(1, -1))
    assert torch.equal(decode(model, latent, 0.5, model=sdxl), ref["ve"].movedim(1, -1))
    assert torch.equal(decode(model, latent, 0.5), ref["ve"].movedim(1, -1))   # format default


def test_a_flow_latent_from_comfyui_is_scaled_back_to_x_t():
    """Without a MODEL, a 16-channel LATENT is taken as ComfyUI's flow convention (x_t / (1 - s))."""
    model, _ = load()
    dec = model.decoder
    latent = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(4))
    text = pack_module("nodes.text_encode").encode_prompt(model.text_encoder, ["a red fox"])
    comfy = dec.decode(latent, 0.3449, text, latent_format="flux", options=Options(noise_frame="comfy_flow"))
    assert torch.equal(decode(model, latent, 0.3449, latent_format="flux"), comfy.movedim(1, -1))
    assert not torch.equal(comfy, dec.decode(latent, 0.3449, text, latent_format="flux",
                                             options=Options(noise_frame="flow")))


def test_latent_format_knowledge_is_derived_from_pid_core():
    latents = pack_module("pid_core.decoding.latents")
    node_base = pack_module("nodes.node_base")
    assert node_base.LATENT_FORMAT_CHOICES == ["auto", "flux", "sd3", "sdxl", "qwenimage", "flux2"]
    for cls, name in [("Flux", "flux"), ("SD3", "sd3"), ("SDXL", "sdxl"), ("Wan21", "qwenimage"),
                      ("Flux2", "flux2"), ("SD15", None), ("Wan22", None)]:
        assert host.model_latent_format(FakeModel(cls))[0] == name
    assert host.vae_latent_formats(FakeVAE(16)) == {"flux", "sd3"}
    assert host.vae_latent_formats(FakeVAE(16, latent_dim=3)) == {"qwenimage"}
    assert host.vae_latent_formats(FakeVAE(32)) == host.vae_latent_formats(FakeVAE(128)) == {"flux2"}
    assert {f.name for f in latents.LATENT_FORMATS.values() if f.comfy_classes} == set(
        node_base.LATENT_FORMAT_CHOICES[1:])


def test_inputs_several_nodes_take_are_defined_once():
    node_base = pack_module("nodes.node_base")
    shared = {"pid_model": node_base.PID_MODEL, "prompt": node_base.PROMPT, "seed": node_base.SEED,
              "steps": node_base.STEPS, "latent_format": node_base.LATENT_FORMAT}
    for cls in (Decode, Upscale, pack.NODE_CLASS_MAPPINGS["PiD_Size"]):
        inputs = cls.INPUT_TYPES()["required"]
        for name, spec in shared.items():
            assert name not in inputs or inputs[name] is spec, f"{cls.__name__}.{name} is defined twice"


def test_one_dtype_policy_for_nodes_and_api():
    loading = pack_module("pid_core.files.loading")
    assert host.resolve_dtype("auto") == loading.resolve_dtype("auto", "cpu") == torch.float32
    for dev in ("cpu", "mps", "cuda"):   # never fp16 unless asked
        assert loading.resolve_dtype("auto", dev, bf16_ok=False) == torch.float32
    assert loading.resolve_dtype("auto", "cuda", bf16_ok=True) == torch.bfloat16
    assert loading.resolve_dtype("fp16", "cpu") == torch.float16
    _, info = load()
    assert "compute dtype: fp32" in info


def _families():
    import json
    data = json.loads((ROOT / "tests/fixtures/comfy_model_families.json").read_text())
    return data["families"]


@pytest.mark.parametrize("family", sorted(_families()))
def test_auto_format_and_frame_for_every_comfyui_family(family):
    """Recorded from ComfyUI v0.33 (tools/record_families.py): each model family's latent format
    and sampling classes. A family whose latent format PiD reads resolves to that format and to
    the frame its sampler returns; any other family is refused with its format's name."""
    rec = _families()[family]
    latents = pack_module("pid_core.decoding.latents")
    sampling = rec.get("model_sampling")
    ms = None
    if sampling:   # a stand-in named like the recorded class hierarchy (most-derived first)
        base = type(sampling[-1], (), {})
        for name in reversed(sampling[:-1]):
            base = type(name, (base,), {})
        ms = base()
        ms.sigma_max = 1.0
    model = FakeModel(rec["latent_format"], ms)
    want = latents.format_for_comfy_class(rec["latent_format"])
    info = load()[0].decoder.info if want is None or want.channels == 16 else None
    if want is None:
        with pytest.raises(errors.LatentMismatchError, match=rec["latent_format"]):
            pack_module("nodes.resolve").latent_format("auto", info, model=model)
        return
    if info is None:
        info = load("sdxl_2kto4k" if want.name == "sdxl" else "flux2_v1.5")[0].decoder.info
    name, frame = pack_module("nodes.resolve").latent_format("auto", info, model=model)
    assert name == want.name
    if sampling:
        flow = "CONST" in sampling
        assert frame == ("comfy_flow" if flow else "ve"), (family, sampling)


def test_an_error_names_its_fix_in_the_graph():
    """pid_core errors name the input to change; a node adds where that is in ComfyUI."""
    pid, _ = load("flux_v1.5")
    with pytest.raises(errors.LatentMismatchError) as info:
        decode(pid, torch.randn(1, 4, 4, 4))
    assert "(ComfyUI: in PiD Load Model pick another checkpoint" in str(info.value)
    assert "ComfyUI/models/pid/" in str(info.value) and "--checkpoint" not in str(info.value)
    with pytest.raises(errors.LatentMismatchError, match=r"\(ComfyUI: set latent_format on the PiD node"):
        decode(pid, torch.randn(1, 16, 4, 4), latent_format="sd3")


def test_load_model_compile_choice(monkeypatch):
    real = torch.compile      # dynamo's graph without code generation: fast enough for a unit test
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **{**kw, "backend": "eager", "mode": None}))
    model, info = LoadModel().load(TINY_FILES["flux_v1.5"], "none", "auto", compile="on", clip=TinyTextEncoder())
    assert model.decoder.compile == "default" and "torch.compile: default" in info
    assert decode(model, torch.randn(1, 16, 2, 2), latent_format="flux").shape == (1, 64, 64, 3)
    model, info = load()
    assert model.decoder.compile is None and "torch.compile: off" in info


def test_attention_comfy_runs_the_hosts_optimized_attention(monkeypatch):
    """'comfy' calls ComfyUI's optimized_attention ([B, H, N, d] in, skip_reshape) in every block;
    with its PyTorch backend the image equals the 'pytorch' choice."""
    import sys
    import types

    calls = []

    def optimized_attention(q, k, v, heads, mask=None, skip_reshape=False, **kw):   # attention_pytorch's maths
        assert skip_reshape and heads == q.shape[1] and mask is None
        calls.append(tuple(q.shape))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(q.shape[0], -1, heads * q.shape[-1])

    fake = types.ModuleType("comfy.ldm.modules.attention")
    fake.optimized_attention = optimized_attention
    for name in ("comfy", "comfy.ldm", "comfy.ldm.modules"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "comfy.ldm.modules.attention", fake)
    latent = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(2))
    comfy, info = LoadModel().load(TINY_FILES["flux_v1.5"], "none", "auto", attention="comfy", clip=TinyTextEncoder())
    assert "attention: comfy" in info
    image = decode(comfy, latent, latent_format="flux")
    net = comfy.decoder.net
    assert len(calls) == 4 * (len(net.patch_blocks) + len(net.pixel_blocks))   # every block, every step
    plain, _ = load()
    assert torch.equal(image, decode(plain, latent, latent_format="flux"))


def test_attention_comfy_outside_comfyui_says_what_to_choose():
    with pytest.raises(errors.PiDInputError, match=r"attention 'comfy' is not available here.*"
                                                   r"\(ComfyUI: set attention to pytorch in PiD Load Model\)"):
        LoadModel().load(TINY_FILES["flux_v1.5"], "none", "auto", attention="comfy", clip=TinyTextEncoder())


def test_the_plan_follows_comfyuis_free_memory_and_reserve(monkeypatch):
    """Inside ComfyUI the budget is its free memory minus --reserve-vram (plus PiD's own weights): a
    larger reserve gives smaller tiles, down to the smallest."""
    from types import SimpleNamespace
    pipeline = pack_module("nodes.pipeline")
    memory = pack_module("pid_core.decoding.memory")
    model, _ = load()
    latent = torch.randn(1, 16, 8, 8)
    whole = model.decoder.plan(latent.shape, tile=None).estimate
    free, reserve = whole.total + 64 * memory.MiB, [0]
    mm = SimpleNamespace(get_free_memory=lambda device: free, extra_reserved_memory=lambda: reserve[0],
                         intermediate_device=lambda: torch.device("cpu"))
    monkeypatch.setattr(host, "_optional", lambda name: mm if name == "comfy.model_management" else None)
    plans = []
    monkeypatch.setattr(type(model.decoder), "decode", lambda self, z, s, t, plan=None, **kw: plans.append(plan))
    wanted = [int(whole.total * f) for f in (1.2, 0.9, 0.7, 0.5, 0.1)]
    for budget in wanted:        # a larger reserve each time: budget = free - reserve + PiD's weights
        reserve[0] = free + whole.weights - budget
        pipeline.decode(model, latent, 0.0, "a fox", seed=0, steps=4, latent_format="flux")
    assert [p.budget_bytes for p in plans] == wanted
    sides = [max(p.tile_size) if p.tiled else 256 for p in plans]
    assert not plans[0].tiled and plans[-1].tiled
    assert sides == sorted(sides, reverse=True) and len(set(sides)) >= 3, sides


def _fake_comfy_budget(monkeypatch, budget_bytes):
    """ComfyUI's model management as the pipeline sees it, reporting ``budget_bytes`` free."""
    from types import SimpleNamespace
    mm = SimpleNamespace(get_free_memory=lambda device: budget_bytes, extra_reserved_memory=lambda: 0,
                         intermediate_device=lambda: torch.device("cpu"),
                         throw_exception_if_processing_interrupted=lambda: None)
    monkeypatch.setattr(host, "_optional", lambda name: mm if name == "comfy.model_management" else None)


def test_a_batch_that_does_not_fit_is_decoded_frame_by_frame(monkeypatch):
    """Frames decode one at a time when the batch would have to tile and one frame fits whole; the
    progress counts over all frames; frame i is the image seed + i gives alone (per-image noise)."""
    model, _ = load()
    dec = model.decoder
    frames = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(8))
    one = dec.plan((1, 16, 4, 4), tile=None).estimate.total
    _fake_comfy_budget(monkeypatch, int(one * 1.3) - dec.plan((1, 16, 4, 4), tile=None).estimate.weights)
    assert dec.plan(frames.shape, memory_budget_bytes=int(one * 1.3)).tiled
    bars = []
    real_bar = host.progress_bar
    monkeypatch.setattr(host, "progress_bar", lambda total: bars.append(real_bar(total)) or bars[-1])
    out = decode(model, frames, latent_format="flux", seed=5)
    assert out.shape == (3, 128, 128, 3) and bars[0].total == 12 and bars[0].current == 12
    alone = [decode(model, frames[i:i + 1], latent_format="flux", seed=5 + i) for i in range(3)]
    assert all(torch.equal(out[i], alone[i][0]) for i in range(3))


@pytest.mark.parametrize("fits", [True, False])
def test_shared_noise_gives_identical_frames_identical_outputs(monkeypatch, fits):
    model, _ = load()
    frame = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(9))
    frames = torch.cat([frame, torch.randn(1, 16, 4, 4), frame])
    if not fits:
        _fake_comfy_budget(monkeypatch, int(model.decoder.plan((1, 16, 4, 4), tile=None).estimate.activations * 1.3))
    shared = decode(model, frames, latent_format="flux", seed=3, noise="same for every frame")
    assert torch.equal(shared[0], shared[2]) and not torch.equal(shared[0], shared[1])
    per_image = decode(model, frames, latent_format="flux", seed=3)
    assert not torch.equal(per_image[0], per_image[2]) and torch.equal(per_image[0], shared[0])
    alone = decode(model, frames[1:2], latent_format="flux", seed=4)     # item 1 of a batch: seed + 1
    assert_fp_close(per_image[1:2], alone)
