"""Download a released PiD decoder into ``models/pid/`` — only when the user selects one.

The file is ``checkpoints/<hf_dir>/model_ema_bf16.pth`` in the Hugging Face repo ``nvidia/PiD``
(weights under NVIDIA's non-commercial licence); it is fetched with ``huggingface_hub`` into a
staging folder beside the target, converted to safetensors (a plain tensor copy, no pickle kept)
and saved as ``pid_<release>.safetensors``. Every failure raises ``DownloadError`` with the
manual steps.
"""

from __future__ import annotations

import logging
import os
import shutil

from ..pid_core.checkpoint_io import read_state_dict
from ..pid_core.config import HF_REPO, RELEASES_BY_NAME, WEIGHTS_LICENSE
from ..pid_core.errors import DownloadError

log = logging.getLogger(__name__)

OFF = "off"
_BYTES_NEEDED = 6 * 2**30  # the .pth (~2.6 GB) plus its safetensors copy, with headroom


def remote_filename(release: str) -> str:
    return f"checkpoints/{RELEASES_BY_NAME[release].hf_dir}/model_ema_bf16.pth"


def manual_steps(release: str, dest_dir: str) -> str:
    r = RELEASES_BY_NAME[release]
    return (f"Manual download: open https://huggingface.co/{HF_REPO} (accept the licence if asked: "
            f"{WEIGHTS_LICENSE}), download {remote_filename(release)}, and save it as "
            f"{os.path.join(dest_dir, r.filename.replace('.safetensors', '.pth'))}; then pick it in "
            f"PiD Load Model with download = off.")


def release_choices() -> list[str]:
    return [OFF] + list(RELEASES_BY_NAME)


def ensure_release(release: str, dest_dir: str) -> str:
    """Return the local path of ``release`` in ``dest_dir``, downloading it if absent."""
    if release not in RELEASES_BY_NAME:
        raise DownloadError(f"unknown PiD release '{release}'; choose one of "
                            f"{', '.join(RELEASES_BY_NAME)}.")
    target = os.path.join(dest_dir, RELEASES_BY_NAME[release].filename)
    for existing in (target, target.replace(".safetensors", ".pth")):
        if os.path.isfile(existing) and os.path.getsize(existing) > 0:
            return existing
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError as exc:
        raise DownloadError(f"huggingface_hub is not installed, so PiD cannot download "
                            f"'{release}'. {manual_steps(release, dest_dir)}") from exc
    os.makedirs(dest_dir, exist_ok=True)
    free = shutil.disk_usage(dest_dir).free
    if free < _BYTES_NEEDED:
        raise DownloadError(f"only {free / 2**30:.1f} GB free in {dest_dir}; the PiD download needs "
                            f"about {_BYTES_NEEDED / 2**30:.0f} GB. Free some space, or "
                            f"{manual_steps(release, dest_dir)}")
    staging = os.path.join(dest_dir, ".download")
    log.info("downloading PiD %s from %s (%s) to %s", release, HF_REPO, WEIGHTS_LICENSE, dest_dir)
    try:
        pth = hf_hub_download(repo_id=HF_REPO, filename=remote_filename(release), local_dir=staging)
    except hf_errors.LocalEntryNotFoundError as exc:  # offline (also an EntryNotFoundError)
        raise DownloadError(f"cannot reach huggingface.co to download {release} (offline or "
                            f"HF_HUB_OFFLINE set). {manual_steps(release, dest_dir)}") from exc
    except hf_errors.GatedRepoError as exc:
        raise DownloadError(f"{HF_REPO} is gated: log in with `huggingface-cli login` after "
                            f"accepting the licence on the model page. "
                            f"{manual_steps(release, dest_dir)}") from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError) as exc:
        raise DownloadError(f"{remote_filename(release)} was not found in {HF_REPO} (moved, or "
                            f"a 401 without a token). {manual_steps(release, dest_dir)}") from exc
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise DownloadError(f"downloading {release} failed ({type(exc).__name__}: {exc}); offline, "
                            f"blocked, or the disk filled up. {manual_steps(release, dest_dir)}"
                            ) from exc
    _to_safetensors(pth, target, remote_filename(release))
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _to_safetensors(pth: str, target: str, remote: str) -> None:
    from safetensors.torch import save_file

    state = read_state_dict(pth)  # weights_only load: a pickle that runs code is refused
    tmp = target + ".part"
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp,
                  metadata={"source": f"{HF_REPO}:{remote}", "license": WEIGHTS_LICENSE})
        os.replace(tmp, target)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise DownloadError(f"could not write {target} ({exc}); is the disk full? The downloaded "
                            f"file is kept at {pth}: move it to {target.replace('.safetensors', '.pth')}"
                            f" instead.") from exc
