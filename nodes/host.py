"""The one adapter between the PiD nodes and ComfyUI's services (model folders: ``model_folders``).

Devices and memory (``comfy.model_management``), the ``ModelPatcher`` that lets ComfyUI load,
offload and evict the PiD network like any model, ``ProgressBar`` and interruption, and read-only
looks at core objects (a MODEL's latent format and sampling object, a VAE's latent shape).
ComfyUI is imported lazily and only when present, so the nodes also run in plain PyTorch (tests,
scripts: CPU, progress counted not shown). Nothing here patches ComfyUI or edits ``sys.path``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Optional

import torch

from ..pid_core.decoding.latents import format_for_comfy_class, formats_for_vae
from ..pid_core.errors import PiDInputError
from ..pid_core.files import loading

log = logging.getLogger(__name__)

def _optional(module_name: str):
    """Import a ComfyUI module if ComfyUI is the host, else return None."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


def comfy_available() -> bool:
    return _optional("comfy.model_management") is not None and _optional("folder_paths") is not None


# ----------------------------------------------------------------------------- devices, memory
def offload_device() -> torch.device:
    mm = _optional("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    mm = _optional("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def resolve_dtype(choice: str) -> torch.dtype:
    """The compute dtype for ``choice`` by pid_core's one policy, judged for ComfyUI's compute
    device with ComfyUI's own bf16 verdict (``should_use_bf16``)."""
    mm = _optional("comfy.model_management")
    if mm is None:
        return loading.resolve_dtype(choice, "cpu")
    dev = mm.get_torch_device()
    return loading.resolve_dtype(choice, dev, bf16_ok=bool(mm.should_use_bf16(dev)))


ATTENTION_CHOICES = ("pytorch", "comfy")


def attention_function(choice: str):
    """The attention PiD's blocks run: None for pid_core's own SDPA ("pytorch"), or ComfyUI's
    ``optimized_attention`` ("comfy": the backend ComfyUI was started with: sage, flash, xformers,
    PyTorch or its sub-quadratic fallback), looked up at each call."""
    if choice == "pytorch":
        return None
    attention = _optional("comfy.ldm.modules.attention")
    if choice != "comfy" or attention is None:
        raise PiDInputError(f"attention {choice!r} is not available here; choose 'pytorch' (PyTorch's SDPA) or, "
                            f"inside ComfyUI, 'comfy' (ComfyUI's own attention).", input_name="attention")

    def comfy_attention(q, k, v):   # [B, heads, N, d] -> [B, N, heads * d], as network.blocks.sdpa
        return attention.optimized_attention(q, k, v, q.shape[1], skip_reshape=True)

    return comfy_attention


def wrap_model(module: torch.nn.Module):
    """A ``ModelPatcher`` around ``module`` (None without ComfyUI): ComfyUI then owns its device."""
    mm = _optional("comfy.model_management")
    mp = _optional("comfy.model_patcher")
    if mm is None or mp is None:
        return None
    return mp.ModelPatcher(module, load_device=mm.get_torch_device(),
                           offload_device=mm.unet_offload_device(),
                           size=mm.module_size(module))


def load_for_inference(patcher, module: torch.nn.Module, memory_required: int = 0) -> torch.device:
    """Make ``module`` ready on the compute device; returns that device.

    In ComfyUI this asks the memory manager (which may evict other models, or later evict PiD
    for the LDM). The net is always loaded whole: its norms, gates and embeddings are plain
    torch parameters, which ComfyUI's partial (low-VRAM) loading would leave behind.
    """
    mm = _optional("comfy.model_management")
    if patcher is None or mm is None:
        return next(module.parameters()).device
    mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)
    return patcher.load_device



def memory_budget(device, resident_bytes: int) -> Optional[int]:
    """What a PiD decode may use on ``device`` by ComfyUI's own accounting (bytes): its free memory
    minus the reserve it keeps (``--reserve-vram``), plus ``resident_bytes`` the PiD weights already
    hold there; on every device type ComfyUI measures (CUDA, ROCm, XPU, NPU, MLU, MPS and CPU: RAM).
    None outside ComfyUI (pid_core then asks the device) and on DirectML, which ComfyUI cannot measure."""
    mm = _optional("comfy.model_management")
    if mm is None or getattr(mm, "directml_enabled", False):
        return None
    return max(0, int(mm.get_free_memory(device)) - int(mm.extra_reserved_memory())) + int(resident_bytes)


# ----------------------------------------------------------------------------- progress
class _CountingProgress:
    """Stand-in for ``comfy.utils.ProgressBar`` outside ComfyUI: records what would be shown."""

    def __init__(self, total: int):
        self.total = total
        self.current = 0
        self.updates = 0
        self.previews = []

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates += 1
        if preview is not None:
            self.previews.append(preview)

    def update(self, value):
        self.update_absolute(self.current + value)


def progress_bar(total: int):
    utils = _optional("comfy.utils")
    if utils is None:
        return _CountingProgress(total)
    return utils.ProgressBar(total)


def check_interrupted() -> None:
    """Raise ComfyUI's own interruption exception if the user pressed Cancel."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def preview_side() -> Optional[int]:
    """Long side (px) of live previews, or None when they are off: outside ComfyUI, or preview
    method "none" (comfy/cli_args.py ``--preview-method``, which latent_preview.py
    ``set_preview_method`` also sets per prompt). Other methods show PiD's own x0 (pixels)."""
    cli = _optional("comfy.cli_args")
    if cli is None or _optional("PIL.Image") is None:
        return None
    method = getattr(cli.args, "preview_method", None)
    if method is None or getattr(method, "value", method) == "none":
        return None
    return int(getattr(cli.args, "preview_size", 512))


def preview_image(image: torch.Tensor):
    """A ``[h, w, 3]`` uint8 CPU picture as the PIL image ComfyUI's progress previews carry."""
    return _optional("PIL.Image").fromarray(image.numpy().copy())  # the canvas changes on


# ----------------------------------------------------------------------------- core objects
def model_latent_format(model) -> tuple[Optional[str], str]:
    """(pid_core format name or None, ComfyUI class name) of a connected MODEL."""
    fmt = None
    getter = getattr(model, "get_model_object", None)
    if getter is not None:
        try:
            fmt = getter("latent_format")
        except (AttributeError, KeyError):
            fmt = None
    if fmt is None:
        fmt = getattr(getattr(model, "model", None), "latent_format", None)
    if fmt is None:
        return None, "unknown"
    cls = type(fmt).__name__
    found = format_for_comfy_class(cls)
    return (found.name if found else None), cls


def model_sampling(model):
    """The MODEL's sampling object (what KSampler uses to build its sigmas)."""
    getter = getattr(model, "get_model_object", None)
    if getter is not None:
        return getter("model_sampling")
    return model.model.model_sampling


def comfy_calculate_sigmas() -> Optional[Callable[[Any, str, int], torch.Tensor]]:
    samplers = _optional("comfy.samplers")
    return samplers.calculate_sigmas if samplers is not None else None


def scheduler_names(fallback: list[str]) -> list[str]:
    samplers = _optional("comfy.samplers")
    return list(samplers.KSampler.SCHEDULERS) if samplers is not None else list(fallback)


def sampler_names(fallback: list[str]) -> list[str]:
    samplers = _optional("comfy.samplers")
    return list(samplers.KSampler.SAMPLERS) if samplers is not None else list(fallback)


def discard_penultimate_samplers() -> set[str]:
    samplers = _optional("comfy.samplers")
    if samplers is None:
        return {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    return set(samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS)


def vae_latent_formats(vae) -> set[str]:
    """Latent formats a VAE's latents can be, from its channel count and dimensionality."""
    return set(formats_for_vae(getattr(vae, "latent_channels", None), getattr(vae, "latent_dim", 2) == 3))


def vae_description(vae) -> str:
    ch = getattr(vae, "latent_channels", "?")
    return f"{ch}-channel {'3-D' if getattr(vae, 'latent_dim', 2) == 3 else '2-D'}"



def vae_encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """``vae.encode`` for an image batch ``[B, H, W, 3]`` in [0, 1] -> raw latent ``[B, ...]``.

    ComfyUI's video VAEs (latent_dim 3, e.g. Qwen-Image's Wan 2.1 VAE) treat a batch as frames,
    so those encode one image at a time.
    """
    if getattr(vae, "latent_dim", 2) != 3 or pixels.shape[0] == 1:
        return vae.encode(pixels)
    return torch.cat([vae.encode(pixels[i:i + 1]) for i in range(pixels.shape[0])], dim=0)


def vae_decode(vae, latent: torch.Tensor) -> torch.Tensor:
    """``vae.decode`` of a raw latent -> image batch ``[B, H, W, 3]`` in [0, 1] at the VAE's own size.

    A video VAE's 5-D output ``[B, T, H, W, C]`` is folded into the batch, as nodes.py VAEDecode
    does.
    """
    images = vae.decode(latent)
    if images.dim() == 5:
        images = images.reshape(-1, *images.shape[-3:])
    return images[..., :3]
