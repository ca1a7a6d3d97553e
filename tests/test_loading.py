"""Tiny checkpoints written in every supported file layout load, decode and report themselves."""

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pid_core import load_decoder
from pid_core.errors import CheckpointReadError, NotAPiDCheckpointError, PiDInputError
from pid_core.files.loading import resolve_dtype
from pid_core.frontends import cli, cli_io
from pid_core.frontends.cli_io import read_png_parameters

ROOT = Path(__file__).resolve().parents[1]


def _strip(sd, prefix):
    return {prefix + k[len("net."):]: v for k, v in sd.items()}


def _split(sd):
    out = dict(sd)
    for k in [k for k in sd if ".adaLN_modulation.0." in k and k.startswith("pixel_blocks")]:
        v = out.pop(k)
        d = sd[k.split("adaLN_modulation")[0] + "norm1.weight"].shape[0]
        halves = v.view(-1, 6, d, *v.shape[1:])
        base, kind = k.split(".adaLN_modulation.0.")
        out[f"{base}.adaLN_modulation_msa.{kind}"] = halves[:, :3].reshape(-1, *v.shape[1:]).contiguous()
        out[f"{base}.adaLN_modulation_mlp.{kind}"] = halves[:, 3:].reshape(-1, *v.shape[1:]).contiguous()
    return out


LAYOUTS = {
    "official.pth": lambda sd: {k: v.to(torch.bfloat16) for k, v in sd.items()},
    "noprefix.safetensors": lambda sd: _strip(sd, ""),
    "net.safetensors": lambda sd: sd,
    "comfy.safetensors": lambda sd: _strip(sd, "model.diffusion_model."),
    "comfy_split.safetensors": lambda sd: _split(_strip(sd, "model.diffusion_model.")),
}


def _write(path: Path, sd):
    if path.suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("release", ["flux_2k", "flux_v1.5", "flux2_v1.5", "sdxl_2kto4k"])
def test_every_layout_loads_and_decodes(tmp_path, tiny_sd_factory, text_features, layout, release):
    ref = tiny_sd_factory(release)
    path = tmp_path / f"pid_{release}_{layout}"
    _write(path, LAYOUTS[layout](ref))
    dec = load_decoder(path, dtype="fp32")
    # identical state-dict semantics: same upstream keys, same values (bf16 file -> bf16 values)
    got = dec.net.state_dict()
    assert set(got) == {k[4:] for k in ref}
    for k, v in ref.items():
        want = v.to(torch.bfloat16).float() if layout.endswith(".pth") else v
        assert torch.equal(got[k[4:]], want), k
    ch = dec.info.latent_channels
    latent = torch.randn(1, ch, 1, 2)
    fmt = dec.info.latent_formats[0]
    img = dec.decode(latent, 0.2, text_features, latent_format=fmt, seed=3, steps=2)
    assert img.shape == (1, 3, dec.info.output_factor, 2 * dec.info.output_factor)
    assert img.min() >= 0 and img.max() <= 1


def test_same_weights_same_image_across_layouts(tmp_path, tiny_sd_factory, text_features):
    ref = tiny_sd_factory("flux_v1.5")
    images = []
    for layout in ("noprefix.safetensors", "comfy_split.safetensors"):
        path = tmp_path / layout
        _write(path, LAYOUTS[layout](ref))
        images.append(load_decoder(path).decode(torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(1)),
                                                0.3, text_features, latent_format="flux", seed=5))
    # weights are bit-equal (test above); CPU GEMM rounding may differ with storage alignment
    torch.testing.assert_close(images[0], images[1], atol=1e-5, rtol=0)


def test_dtype_selection(tiny_sd_factory):
    sd = tiny_sd_factory("flux_2k")
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        dec = load_decoder(sd, dtype=name)
        assert all(p.dtype == dt for p in dec.net.parameters())
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(PiDInputError, match="compute dtype 'int8' is unknown"):
        resolve_dtype("int8", "cpu")


def test_bf16_decode_close_to_fp32(tiny_sd_factory, text_features):
    sd = tiny_sd_factory("flux_v1.5")
    lat = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(2))
    a = load_decoder(sd, dtype="fp32").decode(lat, 0.1, text_features, latent_format="flux", seed=1)
    b = load_decoder(sd, dtype="bf16").decode(lat, 0.1, text_features, latent_format="flux", seed=1)
    assert (a - b).abs().mean() < 0.02


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"net.y_pos_embedding": Evil()}, f)
    with pytest.raises(CheckpointReadError, match="Refused to load 'evil.pth'"):
        load_decoder(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "truncated or corrupted"),
])
def test_bad_safetensors(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match=match):
        load_decoder(path)


def test_truncated_pth(tmp_path, tiny_sd_factory):
    path = tmp_path / "cut.pth"
    torch.save(tiny_sd_factory("flux_2k"), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointReadError, match="truncated or corrupted"):
        load_decoder(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointReadError, match="does not exist"):
        load_decoder(tmp_path / "nope.safetensors")


def test_vae_file_refused(tmp_path):
    path = tmp_path / "ae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3),
               "decoder.conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(NotAPiDCheckpointError, match="'ae.safetensors' is a VAE"):
        load_decoder(path)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pid_core", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_cli_info_prints_family(tmp_path, tiny_sd_factory):
    path = tmp_path / "pid_flux2_v1.5.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny_sd_factory("flux2_v1.5").items()}, path)
    r = _cli("info", str(path))
    assert r.returncode == 0, r.stderr
    assert "family:     flux2 (flux2 latents, 128 channels)" in r.stdout
    assert "variant:    v1.5 2kto4k" in r.stdout and "bfloat16" in r.stdout


def test_cli_decode_comfy_latent(tmp_path, tiny_sd_factory, text_features):
    ck = tmp_path / "pid.safetensors"
    save_file(tiny_sd_factory("flux_2k"), str(ck))
    lat = tmp_path / "x.latent"
    save_file({"latent_tensor": torch.randn(1, 16, 2, 3), "latent_format_version_0": torch.tensor([])}, str(lat))
    emb = tmp_path / "text.safetensors"
    save_file({"text": text_features}, str(emb))
    out = tmp_path / "out.png"
    r = _cli("decode", "--checkpoint", str(ck), "--latent", str(lat), "--sigma", "0.3", "--text-embeds", str(emb),
             "--latent-format", "flux", "--device", "cpu", "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 96 and int.from_bytes(data[20:24], "big") == 64
    made = read_png_parameters(str(out))        # how the image was made, to trace and re-make it
    assert made["checkpoint"] == "pid.safetensors" and made["sigma"] == 0.3 and made["seed"] == 0
    assert made["steps"] == 4 and made["size"] == [64, 96] and made["latent_format"] == "flux"
    assert made["version"] == cli_io.pack_version() != "unknown" and made["command"].startswith(
        "python -m pid_core decode --checkpoint")


def test_the_console_command_points_at_the_cli():
    """pyproject's ``pid-core`` entry point (what ``pip install -e .`` writes into .venv/bin) resolves
    to the command line's main, so the command works from any folder after the README's set-up."""
    tomllib = pytest.importorskip("tomllib")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["pid-core"]
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert callable(main) and main is cli.main, target


def test_cli_reports_errors_cleanly(tmp_path):
    r = _cli("info", str(tmp_path / "missing.pth"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert "(on the command line: --checkpoint PATH," in r.stderr and "ComfyUI" not in r.stderr


def test_cli_format_error_names_the_flag(tmp_path, tiny_sd_factory, text_features):
    """A 16-channel latent on a v1 2k checkpoint (FLUX.1 or SD3) needs --latent-format."""
    ck, lat, emb = tmp_path / "pid_2k.safetensors", tmp_path / "x.latent", tmp_path / "t.safetensors"
    save_file(tiny_sd_factory("flux_2k", prefix=""), str(ck))
    save_file({"latent_tensor": torch.randn(1, 16, 2, 3), "latent_format_version_0": torch.tensor([])}, str(lat))
    save_file({"text": text_features}, str(emb))
    r = _cli("decode", "--checkpoint", str(ck), "--latent", str(lat), "--sigma", "0", "--text-embeds", str(emb),
             "--device", "cpu", "-o", str(tmp_path / "o.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "(on the command line: --latent-format flux|sd3|sdxl|qwenimage|flux2|normalized)" in r.stderr
