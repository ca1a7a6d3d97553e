"""Sizes users can pick (pid_core.decoding.sizing presets and PiD Size): trained sizes per checkpoint kind,
the empty-latent size that decodes to exactly that size, and what happens beyond the envelope."""

from __future__ import annotations

import pytest
import torch
from conftest import with_envelope
from node_helpers import TinyTextEncoder, load_pack, pack_module
from safetensors.torch import save_file

pack = load_pack()
host = pack_module("nodes.host")
model_folders = pack_module("nodes.model_folders")
sizing = pack_module("pid_core.decoding.sizing")
config = pack_module("pid_core.network.config")
errors = pack_module("pid_core.errors")
rw = pack_module("pid_core.network.random_weights")
Size = pack.NODE_CLASS_MAPPINGS["PiD_Size"]
CUSTOM = pack_module("nodes.size").CUSTOM


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "pid").mkdir()
    for release in ("flux_v1.5", "flux_2k", "flux2_v1.5"):
        save_file(rw.random_state_dict(rw.tiny_config(release), seed=1), str(root / "pid" / f"{release}.safetensors"))
    return root


def load(models, monkeypatch, release, envelope):
    """A tiny net of ``release``'s family, given the released checkpoint's envelope (tiny nets
    have custom dims, hence no envelope of their own)."""
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(models))
    model, _ = pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"]().load(f"{release}.safetensors", "none", "auto",
                                                               clip=TinyTextEncoder())
    model.decoder = with_envelope(model.decoder, config.ENVELOPES[envelope])
    return model


def test_the_2kto4k_grid_follows_the_upstream_construction():
    grid = set(config.SIZES_2KTO4K)
    assert len(grid) == len(config.SIZES_2KTO4K) == 31
    assert all(h % 64 == 0 and w % 64 == 0 and max(h, w) <= 4096 and min(h, w) >= 1536 for h, w in grid)
    assert {(h, w) for h, w in grid if h == w} == {(s, s) for s in range(2048, 3585, 256)}
    assert (2816, 4096) in grid and (4096, 2816) in grid and (1536, 2752) in grid and (2176, 4096) in grid
    assert all((w, h) in grid for h, w in grid)                          # both orientations


def test_presets_and_aspect_labels():
    labels = sizing.size_presets()
    assert len(labels) == len(config.SIZES_2K) + len(config.SIZES_2KTO4K)
    assert "2k: 2048x2048 (1:1)" in labels and "2k: 2304x1728 (4:3)" in labels
    assert "2kto4k: 4096x2816 (~3:2)" in labels and "2kto4k: 2752x1536 (~16:9)" in labels
    assert sizing.parse_size_label("2kto4k: 4096x2816 (~3:2)") == ("2kto4k", (2816, 4096))


@pytest.mark.parametrize("release,label,ldm", [
    ("flux_2k", "2k: 2304x1728 (4:3)", (576, 432)),
    ("flux_v1.5", "2kto4k: 4096x2816 (~3:2)", (1024, 704)),
    ("flux2_v1.5", "2kto4k: 3072x1728 (16:9)", (768, 432)),             # FLUX.2: x64 of a 16x VAE
])
def test_size_node_gives_the_empty_latent_that_decodes_whole_to_that_size(models, monkeypatch, release,
                                                                          label, ldm):
    env = "2k" if release.endswith("2k") else "2kto4k"
    model = load(models, monkeypatch, release, env)
    width, height, info = Size().size(model, label)
    assert (width, height) == ldm and "a trained size of this" in info and "decoded whole" in info
    f = model.info.vae_factor
    latent = torch.randn(1, model.info.latent_channels, height // f, width // f)
    plan = model.decoder.plan(latent.shape)
    out_w, out_h = (int(v) for v in label.split(": ")[1].split(" ")[0].split("x"))
    assert plan.output_size == (out_h, out_w) and not plan.tiled


def test_another_kinds_size_and_custom_sizes_say_how_they_decode(models, monkeypatch):
    model = load(models, monkeypatch, "flux_2k", "2k")
    _, _, info = Size().size(model, "2kto4k: 4096x2816 (~3:2)")     # beyond a 2k checkpoint
    assert "will tile it (about 4 tiles of up to 2688 px" in info and "GiB" in info
    w, h, info = Size().size(model, CUSTOM, 12288, 6144)
    assert (w, h) == (3072, 1536) and "will tile it" in info
    v15 = load(models, monkeypatch, "flux_v1.5", "2kto4k")
    _, _, info = Size().size(v15, "2k: 2304x1728 (4:3)")           # in range, not on the grid
    assert "not one of its trained sizes; nearest trained: 2368x1792" in info
    w, h, _ = Size().size(v15, CUSTOM, 4000, 3000)                  # snapped to the x32 grid
    assert (w, h) == (1000, 752)
    with pytest.raises(errors.PiDInputError, match="has a short side below 1536 px, the smallest this "
                                                   "2kto4k checkpoint was trained for"):
        Size().size(v15, CUSTOM, 4096, 1024)


def test_custom_dimension_nets_have_no_trained_sizes(models, monkeypatch):
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(models))
    model, _ = pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"]().load("flux_v1.5.safetensors", "none", "auto",
                                                               clip=TinyTextEncoder())
    w, h, info = Size().size(model, "2kto4k: 2048x2048 (1:1)")
    assert (w, h) == (512, 512) and "no trained sizes" in info
