"""The verified download of PiD files, against a local fake hub (tests/fake_hub.py; no network).

The real code path runs end to end: ``HfApi.get_paths_info`` reads the file's LFS metadata,
``hf_hub_download`` fetches it over HTTP from 127.0.0.1, and the pack hashes and renames it. Each
failure must raise ``DownloadError`` with the manual steps and leave no file under the final name
(nor the staging folder or the ``.part`` file).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import socket
import sys
from collections import namedtuple

import pytest
import torch
from fake_hub import FakeHub
from node_helpers import TinyTextEncoder, load_pack, pack_module
from safetensors.torch import save

from pid_core.network.random_weights import random_state_dict, tiny_config

pytest.importorskip("huggingface_hub")

REPACK = "Comfy-Org/PixelDiT"
SD3_2K = "pid_sd3_512_to_2048_4step_bf16.safetensors"      # unpinned in the table
FLUX15 = "pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors"  # pinned in the table
GEMMA = "gemma_2_2b_it_elm_bf16.safetensors"


@pytest.fixture(scope="module")
def pack():
    load_pack()
    return pack_module("nodes.download"), pack_module("pid_core.files.model_files"), \
        pack_module("pid_core.errors").DownloadError


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "models" / "diffusion_models"
    d.mkdir(parents=True)
    return d


def payload(n=200_000, seed=0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())


def serve(hub, files, name, data, **faults):
    entry = files.lookup(name)
    hub.add(entry.repo, entry.path, data, **faults)
    return entry


def unpin(monkeypatch, dl, files, name, **pins):
    """Replace the table entry's pinned size/digest (the fake hub's bytes are not the real file)."""
    entry = dataclasses.replace(files.lookup(name), sha256=pins.get("sha256"),
                                size_bytes=pins.get("size_bytes"))
    real = files.lookup
    monkeypatch.setattr(dl, "lookup", lambda c: entry if c == name else real(c))
    return entry


def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder))


def expect_error(pack, fn, *words):
    _dl, _files, DownloadError = pack
    with pytest.raises(DownloadError) as info:
        fn()
    msg = str(info.value)
    for w in words + ("Manual download: open https://huggingface.co/", "download = off"):
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# --- success -----------------------------------------------------------------------------------

def test_repack_file_downloads_verified_to_its_name(pack, hub, dest, caplog):
    dl, files, _ = pack
    data = payload()
    serve(hub, files, SD3_2K, data)
    caplog.set_level("INFO")
    path = dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url)
    assert path == str(dest / SD3_2K)
    assert (dest / SD3_2K).read_bytes() == data
    assert leftovers(dest) == [SD3_2K]          # no staging folder, no .part file
    log = caplog.text
    assert "Licence:" in log and "non-commercial" in log and REPACK in log   # shown first
    assert log.index("Licence:") < log.index("verified")
    assert hashlib.sha256(data).hexdigest() in log
    assert hub.downloads() == 1


def test_existing_file_is_used_without_asking_the_hub(pack, hub, dest):
    dl, _files, _ = pack
    (dest / SD3_2K).write_bytes(b"already here")
    assert dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url) == str(dest / SD3_2K)
    assert hub.requests == []


def test_pinned_digest_that_matches_passes(pack, hub, dest, monkeypatch):
    dl, files, _ = pack
    data = payload(seed=1)
    unpin(monkeypatch, dl, files, FLUX15, sha256=hashlib.sha256(data).hexdigest(),
          size_bytes=len(data))
    serve(hub, files, FLUX15, data)
    path = dl.ensure_release(FLUX15, str(dest), endpoint=hub.url)
    assert (dest / FLUX15).read_bytes() == data and path == str(dest / FLUX15)


def test_official_release_is_kept_as_the_hubs_pth_and_loads(pack, hub, tmp_path):
    dl, files, _ = pack
    buf = io.BytesIO()
    torch.save(random_state_dict(tiny_config("flux_v1.5"), seed=0), buf)
    entry = serve(hub, files, "flux_v1.5", buf.getvalue())
    assert entry.repo == "nvidia/PiD" and entry.path.endswith("_flux_distill_4step/model_ema_bf16.pth")
    pid_dir = tmp_path / "models" / "pid"
    path = dl.ensure_release("flux_v1.5", str(pid_dir), endpoint=hub.url)
    assert path == str(pid_dir / "pid_flux_v1.5.pth")
    assert (pid_dir / "pid_flux_v1.5.pth").read_bytes() == buf.getvalue()  # byte-identical
    from pid_core import load_decoder
    assert load_decoder(path).info.version == "v1.5"


# --- failures: each a DownloadError with the manual steps, nothing left behind -----------------

def test_gated_repo(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), status=401, error_code="GatedRepo")
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "Comfy-Org/PixelDiT is gated", "huggingface-cli login")
    assert leftovers(dest) == []


def test_forbidden_403_gated(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, "sdxl_2kto4k", payload(), status=403, error_code="GatedRepo")
    expect_error(pack, lambda: dl.ensure_release("sdxl_2kto4k", str(dest), endpoint=hub.url),
                 "nvidia/PiD is gated", "accept the licence")


def test_401_without_token_reads_as_not_found(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), status=401, error_code="RepoNotFound")
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "was not found in Comfy-Org/PixelDiT (HTTP 401", "needs a login")
    assert leftovers(dest) == []


def test_file_missing_on_the_hub(pack, hub, dest):
    dl, _files, _ = pack
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 f"diffusion_models/{SD3_2K} was not found in Comfy-Org/PixelDiT")


def test_404_entry_not_found(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), status=404, error_code="EntryNotFound")
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "was not found in Comfy-Org/PixelDiT (HTTP 404")


def test_server_error(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), status=500)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 f"downloading {SD3_2K} failed (HTTP 500")


def test_offline_unreachable_hub(pack, dest):
    dl, _files, _ = pack
    with socket.socket() as s:           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=f"http://127.0.0.1:{port}"),
                 "cannot reach http://127.0.0.1", "offline")
    assert leftovers(dest) == []


def test_hf_hub_offline_mode(pack, hub, dest, monkeypatch, request):
    dl, files, _ = pack
    import huggingface_hub.constants as c
    from huggingface_hub.utils import _http
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    reset = getattr(_http, "reset_sessions", None)  # huggingface_hub < 1 applies offline mode
    if reset is not None:                              # when it builds its HTTP session
        reset()
        request.addfinalizer(reset)
    serve(hub, files, SD3_2K, payload())
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "cannot reach", "HF_HUB_OFFLINE")
    assert hub.requests == [] and leftovers(dest) == []


def test_digest_mismatch_deletes_the_download(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), published_sha256="ab" * 32)
    msg = expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                       "arrived damaged", "ab" * 32, "was deleted")
    assert hashlib.sha256(payload()).hexdigest() in msg
    assert leftovers(dest) == []


def test_transfer_cut_off(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), cut_after=50_000)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 f"downloading {SD3_2K} failed")
    assert leftovers(dest) == []


def test_pinned_digest_differs_from_the_hub(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, FLUX15, payload())          # the table pins the real file's sha256
    expect_error(pack, lambda: dl.ensure_release(FLUX15, str(dest), endpoint=hub.url),
                 "this pack pins sha256 18931256", "comfycolab", "not downloaded")
    assert hub.downloads() == 0 and leftovers(dest) == []


def test_no_lfs_metadata_is_refused(pack, hub, dest):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload(), lfs=False)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "publishes no Git LFS sha256")
    assert hub.downloads() == 0


def test_disk_full_before_download(pack, hub, dest, monkeypatch):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 10_000))
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "only 0.0 GB free", "Free some space")
    assert hub.downloads() == 0


def test_disk_full_during_download(pack, hub, dest, monkeypatch):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload())

    def fill_disk(hub_module, entry, staging, endpoint):
        os.makedirs(staging, exist_ok=True)
        with open(os.path.join(staging, entry.name), "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_fetch", fill_disk)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "No space left on device", "disk filled up", f"Nothing was kept under {dest / SD3_2K}")
    assert leftovers(dest) == []


def test_disk_full_at_the_final_rename(pack, hub, dest, monkeypatch):
    dl, files, _ = pack
    serve(hub, files, SD3_2K, payload())
    real = os.replace

    def replace(src, dst):
        if str(dst) == str(dest / SD3_2K):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(dl.os, "replace", replace)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest), endpoint=hub.url),
                 "No space left on device")
    assert leftovers(dest) == []


def test_huggingface_hub_missing(pack, dest, monkeypatch):
    dl, _files, _ = pack
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    expect_error(pack, lambda: dl.ensure_release(SD3_2K, str(dest)), "huggingface_hub is not installed")


def test_unknown_choice(pack, dest):
    dl, _files, DownloadError = pack
    with pytest.raises(DownloadError, match=r"unknown PiD download 'flux_v3'; choose one of .*flux_v1\.5"):
        dl.ensure_release("flux_v3", str(dest))


# --- the table and the node wiring ------------------------------------------------------------

def test_choices_offer_loadable_repack_files_and_every_release(pack):
    dl, files, _ = pack
    choices = dl.release_choices()
    assert choices[0] == dl.OFF and len(set(choices)) == len(choices)
    assert {FLUX15, SD3_2K, GEMMA, "gemma_2_2b_it_elm_fp8_scaled.safetensors", "flux_v1.5"} <= set(choices)
    assert not [c for c in choices if "mxfp8" in c or "int8" in c]   # refused today, not offered
    for c in choices[1:]:
        e = files.lookup(c)
        assert e.folder == {"text_encoder": "text_encoders"}.get(e.kind, "pid" if e.repo == "nvidia/PiD"
                                                                  else "diffusion_models")


def test_table_is_consistent(pack):
    _dl, files, _ = pack
    names = [f.name for f in files.REPACK_FILES + files.OFFICIAL_FILES]
    assert len(names) == len(set(names))
    for f in files.REPACK_FILES:
        assert f.path == f"{f.folder}/{f.name}" and f.provenance
        if f.kind == "decoder":
            assert f.name.startswith("pid_")       # so PiD Load Model lists it from diffusion_models/
        if f.sha256 is not None:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.size_bytes
    for r in pack_module("pid_core.network.config").RELEASES:
        assert files.BY_RELEASE[r.name].path == f"checkpoints/{r.hf_dir}/model_ema_bf16.pth"


def test_load_model_lists_every_repack_decoder_from_diffusion_models(pack, tmp_path, monkeypatch):
    _dl, files, _ = pack
    model_folders = pack_module("nodes.model_folders")
    (tmp_path / "pid").mkdir()
    (tmp_path / "diffusion_models" / "nvidia_pid").mkdir(parents=True)
    (tmp_path / "pid" / "pid_flux_v1.5.pth").write_bytes(b"x")
    (tmp_path / "diffusion_models" / "flux1-dev.safetensors").write_bytes(b"x")
    decoders = [f.name for f in files.REPACK_FILES if f.kind == "decoder"]
    for name in decoders:
        (tmp_path / "diffusion_models" / "nvidia_pid" / name).write_bytes(b"x")
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(tmp_path))
    listed = model_folders.checkpoint_names()
    assert listed[0] == "pid_flux_v1.5.pth" and "flux1-dev.safetensors" not in listed
    assert sorted(listed[1:]) == sorted(f"nvidia_pid/{n}" for n in decoders)
    want = tmp_path / "diffusion_models" / "nvidia_pid" / FLUX15
    assert model_folders.checkpoint_path(f"nvidia_pid/{FLUX15}") == str(want)


def test_model_dir_prefers_the_current_folder_name(pack, tmp_path, monkeypatch):
    model_folders = pack_module("nodes.model_folders")
    models = str(tmp_path)
    fp = type(sys)("folder_paths")
    fp.models_dir = models
    fp.folder_names_and_paths = {
        "diffusion_models": ([os.path.join(models, "unet"), os.path.join(models, "diffusion_models")], set()),
        "text_encoders": ([os.path.join(models, "text_encoders"), os.path.join(models, "clip")], set())}
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    assert model_folders.model_dir("diffusion_models") == os.path.join(models, "diffusion_models")
    assert model_folders.model_dir("text_encoders") == os.path.join(models, "text_encoders")
    assert model_folders.model_dir("pid") == os.path.join(models, "pid")      # not registered yet
    fp.folder_names_and_paths["diffusion_models"][0].insert(0, "/big/disk/unet")  # a yaml default
    assert model_folders.model_dir("diffusion_models") == os.path.normpath("/big/disk/unet")


def test_node_download_of_a_decoder_and_of_gemma(pack, hub, tmp_path, monkeypatch):
    dl, files, _ = pack
    load_model = pack_module("nodes.load_model")
    model_folders = pack_module("nodes.model_folders")
    monkeypatch.setenv(model_folders.ENV_MODELS_DIR, str(tmp_path))
    monkeypatch.setattr(load_model, "ensure_release",
                        lambda c, d: dl.ensure_release(c, d, endpoint=hub.url))
    net = save({k: v.contiguous() for k, v in random_state_dict(tiny_config("flux_v1.5"), seed=0).items()})
    unpin(monkeypatch, dl, files, FLUX15)
    serve(hub, files, FLUX15, net)
    Load = load_pack().NODE_CLASS_MAPPINGS["PiD_LoadModel"]
    model, info = Load().load("(unused)", "none", "fp32", download=FLUX15, clip=TinyTextEncoder())
    assert (tmp_path / "diffusion_models" / FLUX15).read_bytes() == net and "v1.5" in info
    unpin(monkeypatch, dl, files, GEMMA)
    serve(hub, files, GEMMA, payload(seed=3))
    loaded = []
    monkeypatch.setattr(load_model, "load_text_encoder", lambda p: loaded.append(p) or TinyTextEncoder())
    (tmp_path / "pid").mkdir(exist_ok=True)
    os.replace(tmp_path / "diffusion_models" / FLUX15, tmp_path / "pid" / "pid_flux_v1.5.safetensors")
    model, _ = Load().load("pid_flux_v1.5.safetensors", "none", "fp32", download=GEMMA)
    assert loaded == [str(tmp_path / "text_encoders" / GEMMA)]
    assert model.text_encoder_name == GEMMA
