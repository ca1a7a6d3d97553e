"""Helpers for the node tests: import the pack the way ComfyUI does, fake host objects.

ComfyUI imports a custom-node pack from its folder as a package (relative imports inside), so the
node modules cannot be imported as top-level ``nodes.*``. :func:`load_pack` does what ComfyUI's
loader does (``spec_from_file_location`` on the root ``__init__.py``) under the package name
:data:`PACK`; no ``sys.path`` edit. Its ``pid_core`` is ``PACK.pid_core`` — a different module
object from the top-level ``pid_core`` other tests import — so take error classes from
:func:`pack_module`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_pid_pack"


def load_pack():
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACK]
            raise
    return sys.modules[PACK]


def pack_module(name: str):
    load_pack()
    return importlib.import_module(f"{PACK}.{name}")


class TinyTextEncoder:
    """A ``pid_core.text.recipe.TextEncoderLike`` with a random embedding table instead of Gemma."""

    bos_id = 1
    pad_id = 0

    def __init__(self, dim: int = 2304, vocab: int = 64, seed: int = 3):
        self.table = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(seed)) * 0.1
        self.calls = 0

    def tokenize(self, text: str) -> list[int]:
        return [2 + (ord(c) % (len(self.table) - 2)) for c in text]

    def hidden_states(self, input_ids, attention_mask):
        self.calls += 1
        return self.table[input_ids] * attention_mask[..., None]


class FakeVAE:
    """Duck-typed ComfyUI VAE: ``encode(BHWC [0,1]) -> raw latent`` by average pooling."""

    def __init__(self, channels: int = 16, factor: int = 8, latent_dim: int = 2):
        self.latent_channels = channels
        self.latent_dim = latent_dim
        self.factor = factor
        self.encoded_shapes = []

    def encode(self, pixels):
        self.encoded_shapes.append(tuple(pixels.shape))
        x = pixels.movedim(-1, 1) * 2 - 1
        pooled = torch.nn.functional.avg_pool2d(x, self.factor)
        reps = -(-self.latent_channels // 3)
        latent = pooled.repeat(1, reps, 1, 1)[:, : self.latent_channels]
        if self.latent_dim == 3:  # like ComfyUI's video VAEs: the batch axis is time
            assert pixels.shape[0] == 1, "a video VAE would treat this batch as frames"
            latent = latent.unsqueeze(2)
        return latent

    def decode(self, latent):
        """The inverse of ``encode`` for its first three channels: ``[B, h*f, w*f, 3]`` in [0, 1]
        (``[B, 1, H, W, 3]`` for a video VAE, as ComfyUI's)."""
        self.decoded_shapes = getattr(self, "decoded_shapes", []) + [tuple(latent.shape)]
        z = latent[:, :, 0] if latent.dim() == 5 else latent
        rgb = torch.nn.functional.interpolate(z[:, :3].float(), scale_factor=self.factor, mode="nearest")
        image = ((rgb + 1) / 2).clamp(0, 1).movedim(1, -1)
        return image.unsqueeze(1) if latent.dim() == 5 else image


class FakeLatentFormat:
    pass


def comfy_latent_format(class_name: str):
    """An object whose class is named like a comfy.latent_formats class (Flux, SD3, ...)."""
    return type(class_name, (FakeLatentFormat,), {})()


class FakeModel:
    """Duck-typed ComfyUI MODEL (ModelPatcher): get_model_object for latent_format / model_sampling."""

    def __init__(self, latent_format_class: str = "Flux", model_sampling=None):
        self.objects = {"latent_format": comfy_latent_format(latent_format_class),
                        "model_sampling": model_sampling}

    def get_model_object(self, name):
        return self.objects[name]
