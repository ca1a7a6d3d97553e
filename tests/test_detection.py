"""Variant detection and strict key checks on meta-device state dicts shaped like each release."""

import re
from pathlib import Path

import pytest
import torch

from pid_core.errors import NotAPiDCheckpointError, StateDictMismatchError, UnsupportedCheckpointError
from pid_core.files.detect import fuse_split_adaln
from pid_core.files.loading import inspect_state_dict
from pid_core.network.config import RELEASES_BY_NAME
from pid_core.network.model import PiDNet

SPEC_LOCAL = Path(__file__).parent / "fixtures" / "spec"
# spec file -> (release whose config must be built, family, version, key count, parameter count)
SPEC_FILES = {
    "pid_flux2k_state_dict.txt": ("flux_2k", "16ch", "v1", 456, 1_362_348_170),
    "pid_flux2_2k_state_dict.txt": ("flux2_2k", "flux2", "v1", 456, 1_362_864_266),
    "pid_sdxl_2kto4k_state_dict.txt": ("sdxl_2kto4k", "sdxl", "v1", 456, 1_362_292_874),
    "pid_flux_2kto4k_v1pt5_state_dict.txt": ("flux_v1.5", "16ch", "v1.5", 461, 1_400_199_315),
    "pid_flux2_2kto4k_v1pt5_state_dict.txt": ("flux2_v1.5", "flux2", "v1.5", 461, 1_400_346_771),
}


def spec_state_dict(fname: str) -> dict:
    path = SPEC_LOCAL / fname
    sd = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        dims = [int(d) for d in re.findall(r"\d+", shape)]
        sd[key] = torch.empty(dims, dtype=torch.bfloat16, device="meta")
    return sd


def meta_release_sd(release: str, prefix="net.") -> dict:
    with torch.device("meta"):
        net = PiDNet(RELEASES_BY_NAME[release].config, dtype=torch.bfloat16)
    return {prefix + k: v for k, v in net.state_dict().items()}


def test_spec_files_are_vendored():
    assert SPEC_LOCAL.is_dir() and sorted(p.name for p in SPEC_LOCAL.glob("*.txt")) == sorted(SPEC_FILES)


@pytest.mark.parametrize("fname", sorted(SPEC_FILES))
def test_release_key_lists_are_recognised(fname):
    release, family, version, n_keys, n_params = SPEC_FILES[fname]
    sd = spec_state_dict(fname)
    assert len(sd) == n_keys
    assert sum(v.numel() for v in sd.values()) == n_params
    _, det = inspect_state_dict(sd, fname, fname)
    assert (det.family, det.version) == (family, version)
    assert det.config == RELEASES_BY_NAME[release].config
    assert det.release is not None and "prefix 'net.'" in det.layout


@pytest.mark.parametrize("fname", sorted(SPEC_FILES))
def test_our_network_has_exactly_the_release_keys_and_shapes(fname):
    release = SPEC_FILES[fname][0]
    ours = {k: tuple(v.shape) for k, v in meta_release_sd(release).items()}
    theirs = {k: tuple(v.shape) for k, v in spec_state_dict(fname).items()}
    assert ours == theirs


@pytest.mark.parametrize("release,family,formats", [
    ("dinov2_2k", "dinov2", ("normalized",)), ("siglip_2k", "siglip", ("normalized",)),
    ("sd3_2kto4k", "16ch", ("sd3", "flux")), ("qwenimage_v1.5", "16ch", ("qwenimage", "flux"))])
def test_other_releases_are_recognised(release, family, formats):
    _, det = inspect_state_dict(meta_release_sd(release), release, f"pid_{release}.safetensors")
    assert det.family == family and det.latent_formats == formats
    assert det.config == RELEASES_BY_NAME[release].config
    if release == "siglip_2k":
        assert det.config.sr_scale == 8


@pytest.mark.parametrize("release,name,resolution,formats", [
    ("flux_v1.5", "pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors", "2kto4k", ("flux", "qwenimage")),
    ("qwenimage_v1.5", "pid_1.5_qwenimage_1024_to_4096_4step_bf16.safetensors", "2kto4k",
     ("qwenimage", "flux")),
    ("flux_2k", "pid_flux1_512_to_2048_4step_bf16.safetensors", "2k", ("flux", "sd3")),
    ("sd3_2kto4k", "pid_sd3_1024_to_4096_4step_bf16.safetensors", "2kto4k", ("sd3", "flux")),
    ("sd3_2k", "pid_sd3_512_to_2048_4step_bf16.safetensors", "2k", ("sd3", "flux")),
    ("sdxl_2kto4k", "pid_sdxl_1024_to_4096_4step_bf16.safetensors", "2kto4k", ("sdxl",)),
    ("flux2_2k", "pid_flux2_512_to_2048_4step_bf16.safetensors", "2k", ("flux2",)),
    # the superseded v1 Qwen-Image 2kto4k file of the repack (same tensors as the 16ch v1 nets)
    ("flux_2k", "pid_qwenimage_1024_to_4096_4step_bf16.safetensors", "2kto4k",
     ("qwenimage", "flux", "sd3")),
])
def test_comfy_org_file_names_give_resolution_and_formats(release, name, resolution, formats):
    _, det = inspect_state_dict(meta_release_sd(release, prefix="model.diffusion_model."), name, name)
    assert (det.resolution, det.latent_formats) == (resolution, formats)
    assert det.envelope is not None and det.envelope.name == resolution


@pytest.mark.parametrize("prefix", ["", "net.", "model.diffusion_model."])
def test_comfyui_split_adaln_layout(prefix):
    sd = meta_release_sd("flux_v1.5", prefix)
    for i in range(2):
        for kind in ("weight", "bias"):
            fused = sd.pop(f"{prefix}pixel_blocks.{i}.adaLN_modulation.0.{kind}")
            half = fused.shape[0] // 2
            for part in ("msa", "mlp"):
                key = f"{prefix}pixel_blocks.{i}.adaLN_modulation_{part}.{kind}"
                sd[key] = torch.empty(half, *fused.shape[1:], device="meta")
    _, det = inspect_state_dict(sd, "comfy.safetensors")
    assert det.version == "v1.5" and "split adaLN" in det.layout


def test_split_adaln_fusion_puts_every_row_back_in_place():
    """Fused row p*6D + j*D + d: msa holds chunks 0-2, mlp chunks 3-5 (each p*3D + j*D + d)."""
    p2, d, cin = 4, 3, 2
    fused = torch.arange(p2 * 6 * d * cin, dtype=torch.float32).view(p2 * 6 * d, cin)
    view = fused.view(p2, 6, d, cin)
    split = {"pixel_blocks.0.norm1.weight": torch.ones(d),
             "pixel_blocks.0.adaLN_modulation_msa.weight": view[:, :3].reshape(-1, cin),
             "pixel_blocks.0.adaLN_modulation_mlp.weight": view[:, 3:].reshape(-1, cin)}
    out, was_split = fuse_split_adaln(split)
    assert was_split and torch.equal(out["pixel_blocks.0.adaLN_modulation.0.weight"], fused)


def test_missing_key_is_named():
    sd = meta_release_sd("flux_2k")
    del sd["net.lq_proj.gate_modules.3.log_alpha"]
    with pytest.raises(StateDictMismatchError, match=r"missing 1 weight \(lq_proj\.gate_modules\.3\.log_alpha\)") as e:
        inspect_state_dict(sd, "x.pth")
    assert e.value.missing == ("lq_proj.gate_modules.3.log_alpha",)


def test_extra_key_is_named():
    sd = meta_release_sd("flux2_v1.5")
    sd["net.lq_proj.lq_aux_rgb_head.0.weight"] = torch.empty(1024, device="meta")
    with pytest.raises(StateDictMismatchError, match=r"unexpected 1 weight \(lq_proj\.lq_aux_rgb_head\.0\.weight\)"):
        inspect_state_dict(sd, "x.pth")


def test_wrong_shape_is_named():
    sd = meta_release_sd("flux_2k")
    sd["net.final_layer.linear.weight"] = torch.empty(4, 16, device="meta")
    with pytest.raises(StateDictMismatchError,
                       match=r"wrongly shaped 1 weight \(final_layer\.linear\.weight \(4, 16\)"):
        inspect_state_dict(sd, "x.pth")


def test_vae_is_refused_plainly():
    sd = {"encoder.conv_in.weight": torch.empty(128, 3, 3, 3, device="meta"),
          "decoder.conv_in.weight": torch.empty(512, 16, 3, 3, device="meta")}
    with pytest.raises(NotAPiDCheckpointError, match="is a VAE"):
        inspect_state_dict(sd, "ae.safetensors")


def test_flux_unet_is_refused_plainly():
    sd = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.empty(9216, 3072, device="meta")}
    with pytest.raises(NotAPiDCheckpointError, match="FLUX diffusion model"):
        inspect_state_dict(sd, "flux1-dev.safetensors")


def test_fp8_repack_is_refused_plainly():
    sd = meta_release_sd("flux_v1.5")
    sd["net.s_embedder.proj.weight"] = torch.empty(1536, 768, dtype=torch.float8_e4m3fn, device="meta")
    sd["net.s_embedder.proj.scale_weight"] = torch.empty((), device="meta")
    with pytest.raises(UnsupportedCheckpointError, match="quantised PiD repack"):
        inspect_state_dict(sd, "pid_fp8_scaled.safetensors")
