"""Where PiD's files live: ComfyUI's model folders (``folder_paths``), or a plain folder outside it.

Decoders are listed from ``models/pid/`` (registered here, with an explicit extension set) and
from ``models/diffusion_models/`` (PiD-named files, where Comfy-Org's repack and core's own PiD
keep them); the Gemma encoder from ``models/text_encoders/``. Without ComfyUI (tests, scripts)
the models root is ``$COMFYUI_PID_MODELS_DIR`` (or ``./models``), laid out like ComfyUI's.
"""

from __future__ import annotations

import os

from .host import _optional

PID_FOLDER = "pid"
PID_EXTENSIONS = {".safetensors", ".pth", ".pt", ".sft"}
ENV_MODELS_DIR = "COMFYUI_PID_MODELS_DIR"
# Files in diffusion_models/ are listed only when their name says PiD (core-native users keep
# e.g. pid_flux1_1024_to_4096_4step.safetensors there, next to every LDM they own).
_DIFFUSION_MODELS_MARK = "pid"


def register_model_folder() -> None:
    """Add ``models/pid`` with an explicit extension set, appending to any existing entry.

    ``extra_model_paths.yaml`` is read before custom nodes load; if it declared ``pid:`` paths,
    they stay (ours is appended) and their entry gains our extension filter.
    """
    fp = _optional("folder_paths")
    if fp is None:
        return
    default = os.path.join(fp.models_dir, PID_FOLDER)
    entry = fp.folder_names_and_paths.get(PID_FOLDER)
    if entry is None:
        fp.folder_names_and_paths[PID_FOLDER] = ([default], set(PID_EXTENSIONS))
        return
    paths, exts = entry
    if default not in paths:
        paths.append(default)
    if isinstance(exts, set):
        exts.update(PID_EXTENSIONS)
    else:  # a foreign entry with another container: replace it, keeping its paths
        fp.folder_names_and_paths[PID_FOLDER] = (paths, set(PID_EXTENSIONS) | set(exts))


def _fallback_root() -> str:
    return os.environ.get(ENV_MODELS_DIR) or os.path.join(os.getcwd(), "models")


# ComfyUI keeps old folder names as aliases (models/unet for diffusion_models, models/clip for
# text_encoders) and lists them first; new files go to the current name.
_LEGACY_NAMES = {"diffusion_models": "unet", "text_encoders": "clip"}


def model_dir(folder: str) -> str:
    """The folder downloads of kind ``folder`` (``pid``, ``diffusion_models``, ``text_encoders``)
    go to: ComfyUI's first registered path for it (an ``extra_model_paths.yaml`` default comes
    first), skipping the legacy alias folder; without ComfyUI, ``<models root>/<folder>``."""
    fp = _optional("folder_paths")
    if fp is None:
        return os.path.join(_fallback_root(), folder)
    current = os.path.normpath(os.path.join(fp.models_dir, folder))
    if folder not in fp.folder_names_and_paths:
        return current
    paths = [os.path.normpath(p) for p in fp.get_folder_paths(folder)]
    legacy = _LEGACY_NAMES.get(folder)
    if not paths:
        return current
    if legacy and paths[0] == os.path.normpath(os.path.join(fp.models_dir, legacy)) \
            and current in paths:
        return current
    return paths[0]


def pid_dir() -> str:
    """The folder official releases are downloaded to: the first registered ``pid`` path."""
    return model_dir(PID_FOLDER)


def _local_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = []
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for f in files:
            if os.path.splitext(f)[1].lower() in PID_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    return sorted(found)


def _is_pid_named(name: str) -> bool:
    return _DIFFUSION_MODELS_MARK in os.path.basename(name.replace("\\", "/")).lower()


def checkpoint_names() -> list[str]:
    """PiD decoder files: everything in ``pid/``, then PiD-named files in ``diffusion_models/``.

    Every Comfy-Org PiD file name starts with ``pid_`` (``pid_flux1_…``, ``pid_1.5_…``,
    ``*_mxfp8``, ``*_int8_convrot``), so all of them are listed; other diffusion models are not.
    """
    fp = _optional("folder_paths")
    if fp is None:
        names = _local_files(pid_dir())
        extra = _local_files(os.path.join(_fallback_root(), "diffusion_models"))
    else:
        names = list(fp.get_filename_list(PID_FOLDER))
        extra = fp.get_filename_list("diffusion_models")
    for n in extra:
        if _is_pid_named(n) and n not in names:
            names.append(n)
    return names


def checkpoint_path(name: str) -> str:
    """Resolve a combo value from :func:`checkpoint_names` to a full path."""
    fp = _optional("folder_paths")
    if fp is None:
        for folder in (pid_dir(), os.path.join(_fallback_root(), "diffusion_models")):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
        return os.path.join(pid_dir(), name)
    for folder in (PID_FOLDER, "diffusion_models"):
        path = fp.get_full_path(folder, name)
        if path is not None:
            return path
    return fp.get_full_path_or_raise(PID_FOLDER, name)


def text_encoder_names() -> list[str]:
    fp = _optional("folder_paths")
    if fp is None:
        return _local_files(os.path.join(_fallback_root(), "text_encoders"))
    return list(fp.get_filename_list("text_encoders"))


def text_encoder_path(name: str) -> str:
    fp = _optional("folder_paths")
    if fp is None:
        return os.path.join(_fallback_root(), "text_encoders", name)
    return fp.get_full_path_or_raise("text_encoders", name)
