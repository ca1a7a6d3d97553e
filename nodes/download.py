"""Opt-in, verified download of one PiD file, only when the user selects it in PiD Load Model.

Choices: Comfy-Org repack files by name, official nvidia/PiD releases by release name (saved as
``models/pid/pid_<release>.pth``, kept byte-identical); the table is ``pid_core.files.model_files``.
The licence and source are logged first; size and sha256 come from the hub's Git LFS metadata
(and a pinned digest where one is public); the file is downloaded into a hidden staging folder in
the target folder, hashed, and renamed to its final name only when both match. Every failure
raises ``DownloadError`` with the manual steps and leaves no partial file under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys

from ..pid_core.errors import DownloadError
from ..pid_core.files.model_files import REPACK_REPO, ModelFile, download_choices, lookup

log = logging.getLogger(__name__)

OFF = "off"
_HEADROOM = 256 * 2**20     # bytes kept free beyond the file itself
_CHUNK = 8 * 2**20


def release_choices() -> list[str]:
    """The values of PiD Load Model's ``download`` input."""
    return [OFF] + download_choices()


def final_path(entry: ModelFile, dest_dir: str) -> str:
    return os.path.join(dest_dir, entry.name)


def manual_steps(entry: ModelFile, dest_dir: str) -> str:
    return (f"Manual download: open https://huggingface.co/{entry.repo} (accept the licence if "
            f"asked: {entry.licence}), download {entry.path}, and save it as "
            f"{final_path(entry, dest_dir)}; then pick it in PiD Load Model with download = off.")


def ensure_release(choice: str, dest_dir: str, *, endpoint: str | None = None) -> str:
    """Return the local path of ``choice`` in ``dest_dir``, downloading and verifying it if absent.

    ``dest_dir`` is the ComfyUI folder the entry belongs in (``lookup(choice).folder``);
    ``endpoint`` overrides the hub address (default: ``HF_ENDPOINT`` or huggingface.co).
    """
    entry = lookup(choice)
    if entry is None:
        raise DownloadError(f"unknown PiD download '{choice}'; choose one of "
                            f"{', '.join(download_choices())}.")
    existing = _existing(entry, dest_dir)
    if existing is not None:
        return existing
    try:
        import huggingface_hub as hub
        from huggingface_hub import utils as hub_errors
    except ImportError as exc:
        raise DownloadError(f"huggingface_hub is not installed, so PiD cannot download "
                            f"'{choice}'. {manual_steps(entry, dest_dir)}") from exc
    final = final_path(entry, dest_dir)
    log.info("PiD download: %s (%s) from https://huggingface.co/%s, file %s. Licence: %s. "
             "Saving to %s.", entry.name, entry.size, entry.repo, entry.path, entry.licence, final)
    size, sha256 = _published(hub, hub_errors, entry, dest_dir, endpoint)
    _check_pins(entry, size, sha256, dest_dir)
    _check_space(entry, dest_dir, size)
    staging = os.path.join(dest_dir, f".{entry.name}.download")
    part = os.path.join(dest_dir, f".{entry.name}.part")
    try:
        fetched = _guard(hub_errors, entry, dest_dir, endpoint,
                         lambda: _fetch(hub, entry, staging, endpoint), transfer=True)
        os.replace(fetched, part)
        _verify(entry, part, size, sha256, dest_dir)
        os.replace(part, final)
    except OSError as exc:
        raise DownloadError(f"downloading {entry.name} failed ({type(exc).__name__}: {_first_line(exc)}); the "
                            f"transfer broke off, the disk filled up, or the folder is not "
                            f"writable. Nothing was kept under {final}. "
                            f"{manual_steps(entry, dest_dir)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.exists(part):
            os.remove(part)
    log.info("PiD download: %s verified (sha256 %s, %d bytes) and saved as %s.", entry.name,
             sha256, size, final)
    return final


def _existing(entry: ModelFile, dest_dir: str) -> str | None:
    names = [entry.name]
    if entry.repo != REPACK_REPO:  # official releases: earlier versions saved a safetensors copy
        names.append(entry.name[:-len(".pth")] + ".safetensors")
    for name in names:
        path = os.path.join(dest_dir, name)
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            return path
    return None


def _fetch(hub, entry: ModelFile, staging: str, endpoint: str | None) -> str:
    """Download into ``staging`` (a clean folder); the seam the tests replace for disk faults."""
    shutil.rmtree(staging, ignore_errors=True)
    return hub.hf_hub_download(repo_id=entry.repo, filename=entry.path, local_dir=staging,
                               endpoint=endpoint)


def _published(hub, hub_errors, entry: ModelFile, dest_dir: str, endpoint: str | None):
    """(size, sha256) from the hub's Git LFS metadata of the file."""
    def ask():
        return hub.HfApi(endpoint=endpoint).get_paths_info(entry.repo, [entry.path])

    infos = [i for i in _guard(hub_errors, entry, dest_dir, endpoint, ask)
             if getattr(i, "path", None) == entry.path]
    if not infos:
        raise DownloadError(f"{entry.path} was not found in {entry.repo} (the hub lists no such "
                            f"file: moved or renamed). {manual_steps(entry, dest_dir)}")
    lfs = getattr(infos[0], "lfs", None)
    if lfs is None:
        raise DownloadError(f"{entry.repo} publishes no Git LFS sha256 for {entry.path}, so its "
                            f"download cannot be verified; nothing was downloaded. "
                            f"{manual_steps(entry, dest_dir)}")
    return int(lfs["size"]), str(lfs["sha256"]).lower()


def _check_pins(entry: ModelFile, size: int, sha256: str, dest_dir: str) -> None:
    pinned = []
    if entry.sha256 and entry.sha256 != sha256:
        pinned.append(f"sha256 {entry.sha256}")
    if entry.size_bytes and entry.size_bytes != size:
        pinned.append(f"{entry.size_bytes} bytes")
    if pinned:
        raise DownloadError(
            f"{entry.repo} now publishes {entry.path} as sha256 {sha256} ({size} bytes), but this "
            f"pack pins {' and '.join(pinned)} for it (from {entry.provenance}). The file on the "
            f"hub changed since this pack was released, so it was not downloaded. Update "
            f"ComfyUI-PiD, or download it yourself if you trust the new file. "
            f"{manual_steps(entry, dest_dir)}")


def _check_space(entry: ModelFile, dest_dir: str, size: int) -> None:
    os.makedirs(dest_dir, exist_ok=True)
    free = shutil.disk_usage(dest_dir).free
    if free < size + _HEADROOM:
        raise DownloadError(f"only {free / 1e9:.1f} GB free in {dest_dir}; {entry.name} needs "
                            f"{(size + _HEADROOM) / 1e9:.1f} GB. Free some space, or "
                            f"{manual_steps(entry, dest_dir)}")


def _verify(entry: ModelFile, path: str, size: int, sha256: str, dest_dir: str) -> None:
    digest, got = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
            got += len(chunk)
    if got != size or digest.hexdigest() != sha256:
        raise DownloadError(
            f"{entry.name} arrived damaged: sha256 {digest.hexdigest()} ({got} bytes), but "
            f"{entry.repo} publishes sha256 {sha256} ({size} bytes). The download was deleted; try "
            f"again (a proxy or an interrupted transfer can cause this). "
            f"{manual_steps(entry, dest_dir)}")


def _transport_errors() -> tuple:
    """Network error classes of the HTTP stack huggingface_hub uses (requests, httpx or httpx2)."""
    found = [ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "RequestException")):
        cls = getattr(sys.modules.get(module), attr, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _guard(hub_errors, entry: ModelFile, dest_dir: str, endpoint: str | None, call,
           transfer: bool = False):
    """Run a hub call; turn every hub/network failure into a DownloadError with the manual steps.

    ``transfer``: the call moves the file itself, so a network error there means the transfer
    broke off, and other ``OSError``s (a full disk) pass through to the caller, which cleans up.
    """
    host = endpoint or "huggingface.co"
    steps = manual_steps(entry, dest_dir)
    network = _transport_errors()
    try:
        return call()
    except hub_errors.GatedRepoError as exc:
        raise DownloadError(f"{entry.repo} is gated: accept the licence on "
                            f"https://huggingface.co/{entry.repo} while logged in, then log in "
                            f"here too (huggingface-cli login, or set HF_TOKEN) and retry. "
                            f"{steps}") from exc
    except hub_errors.LocalEntryNotFoundError as exc:  # hf_hub_download could not reach the hub
        raise DownloadError(f"cannot reach {host} to download {entry.name} (offline, "
                            f"HF_HUB_OFFLINE set, or a proxy/firewall blocks it). {steps}") from exc
    except (hub_errors.RepositoryNotFoundError, hub_errors.EntryNotFoundError,
            hub_errors.RevisionNotFoundError) as exc:
        raise DownloadError(f"{entry.path} was not found in {entry.repo} ({_status(exc)}: moved "
                            f"or renamed, or a 401 because the repository needs a login). "
                            f"{steps}") from exc
    except hub_errors.HfHubHTTPError as exc:
        raise DownloadError(f"downloading {entry.name} failed ({_status(exc)} from {host}: "
                            f"{_first_line(exc)}); the server refused or failed. {steps}") from exc
    except network + (OSError,) as exc:
        if transfer and not isinstance(exc, network):
            raise  # a disk error: the caller reports it and cleans up
        if transfer:
            raise DownloadError(f"downloading {entry.name} failed ({type(exc).__name__}: "
                                f"{_first_line(exc)}); the connection dropped during the "
                                f"transfer. Nothing was kept. {steps}") from exc
        raise DownloadError(f"cannot reach {host} to download {entry.name} (offline, "
                            f"HF_HUB_OFFLINE set, or a proxy/firewall blocks it: "
                            f"{type(exc).__name__}: {_first_line(exc)}). {steps}") from exc


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else type(exc).__name__


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
