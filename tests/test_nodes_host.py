"""nodes.host against a stand-in ``folder_paths`` module (the real one is checked in the host)."""

from __future__ import annotations

import os
import sys
import types

import pytest
from node_helpers import pack_module

host = pack_module("nodes.host")
model_folders = pack_module("nodes.model_folders")


@pytest.fixture
def folder_paths(tmp_path, monkeypatch):
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {
        "diffusion_models": ([str(tmp_path / "models" / "diffusion_models")], {".safetensors"}),
        "text_encoders": ([str(tmp_path / "models" / "text_encoders")], {".safetensors"}),
    }

    def get_folder_paths(name):
        return fp.folder_names_and_paths[name][0][:]

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = []
        for p in paths:
            if os.path.isdir(p):
                out += sorted(f for f in os.listdir(p) if not exts or os.path.splitext(f)[1] in exts)
        return out

    def get_full_path(name, filename):
        for p in fp.folder_names_and_paths[name][0]:
            if os.path.isfile(os.path.join(p, filename)):
                return os.path.join(p, filename)
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = (
        get_folder_paths, get_filename_list, get_full_path)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return fp


def test_registers_pid_folder_with_explicit_extensions(folder_paths):
    model_folders.register_model_folder()
    paths, exts = folder_paths.folder_names_and_paths["pid"]
    assert paths == [os.path.join(folder_paths.models_dir, "pid")]
    assert exts == {".safetensors", ".pth", ".pt", ".sft"}
    model_folders.register_model_folder()  # idempotent
    assert len(folder_paths.folder_names_and_paths["pid"][0]) == 1


def test_appends_to_extra_model_paths_entry(folder_paths, tmp_path):
    # extra_model_paths.yaml runs first: add_model_folder_path creates ([path], set())
    folder_paths.folder_names_and_paths["pid"] = ([str(tmp_path / "nas" / "pid")], set())
    model_folders.register_model_folder()
    paths, exts = folder_paths.folder_names_and_paths["pid"]
    assert paths == [str(tmp_path / "nas" / "pid"), os.path.join(folder_paths.models_dir, "pid")]
    assert ".safetensors" in exts and ".gguf" not in exts
    assert model_folders.pid_dir() == str(tmp_path / "nas" / "pid")  # downloads go to the first path


def test_lists_pid_folder_and_pid_named_diffusion_models(folder_paths, tmp_path):
    model_folders.register_model_folder()
    for rel in ("pid/a.safetensors", "pid/notes.txt", "diffusion_models/flux1-dev.safetensors",
                "diffusion_models/pid_flux1_1024_to_4096.safetensors"):
        path = tmp_path / "models" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert model_folders.checkpoint_names() == ["a.safetensors", "pid_flux1_1024_to_4096.safetensors"]
    assert model_folders.checkpoint_path("pid_flux1_1024_to_4096.safetensors").endswith(
        os.path.join("diffusion_models", "pid_flux1_1024_to_4096.safetensors"))


def test_vae_latent_formats():
    vae = types.SimpleNamespace
    assert host.vae_latent_formats(vae(latent_channels=4, latent_dim=2)) == {"sdxl"}
    assert host.vae_latent_formats(vae(latent_channels=16, latent_dim=2)) == {"flux", "sd3"}
    assert host.vae_latent_formats(vae(latent_channels=16, latent_dim=3)) == {"qwenimage"}
    assert host.vae_latent_formats(vae(latent_channels=128, latent_dim=2)) == {"flux2"}


def test_model_latent_format_names():
    from node_helpers import FakeModel
    assert host.model_latent_format(FakeModel("Wan21")) == ("qwenimage", "Wan21")
    assert host.model_latent_format(FakeModel("SD15")) == (None, "SD15")
    legacy = types.SimpleNamespace(model=types.SimpleNamespace(latent_format=FakeModel("SDXL")
                                                               .get_model_object("latent_format")))
    assert host.model_latent_format(legacy) == ("sdxl", "SDXL")
