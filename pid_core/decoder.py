"""The public decoder: ``load_decoder(...)`` -> ``PiDDecoder.decode(latent, sigma, text, ...)``.

A decode validates its inputs, maps the raw LATENT and its sigma to PiD's frame (latents.py), runs
the adapter once, then the distilled sampler (sampler.py) with the network, and returns an image
in [0, 1]. Nothing is cached between decodes, so an interrupted decode leaves no state behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .config import ENVELOPE_2K, ENVELOPE_2KTO4K, SIZES_2K, TIMESTEP_SCALE
from .errors import LatentMismatchError, PiDInputError
from .latents import LatentFormat, as_4d, get_latent_format
from .loading import load_net
from .model import PiDNet
from .sampler import draw_noise, make_generator, sample, t_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderInfo:
    family: str                 # "16ch" | "sdxl" | "flux2" | "dinov2" | "siglip"
    version: str                # "v1" | "v1.5"
    resolution: str             # "2k" | "2kto4k"
    latent_channels: int
    latent_formats: tuple       # latent format names the checkpoint was trained on
    vae_factor: int
    sr_scale: int
    envelope: tuple | None      # (min_side, max_side) of whole-image output; None = unchecked
    trained_sizes: tuple
    param_count: int
    source_dtype: str
    layout: str
    release: str | None
    name: str = ""

    @property
    def output_factor(self) -> int:
        return self.vae_factor * self.sr_scale

    def describe(self) -> str:
        fmts = "/".join(self.latent_formats)
        return (f"PiD {self.version} {self.resolution} for {fmts} latents ({self.latent_channels} ch), "
                f"x{self.output_factor} output, {self.param_count / 1e6:.0f}M params"
                f"{', release ' + self.release if self.release else ''}")


class PiDDecoder:
    """A loaded PiD network plus what it is. ``decode`` runs on the net's current device/dtype."""

    def __init__(self, net: PiDNet, info: DecoderInfo):
        self.net = net
        self.info = info

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def output_size_for(self, latent_hw) -> tuple[int, int]:
        f = self.info.output_factor
        return int(latent_hw[0]) * f, int(latent_hw[1]) * f

    # -- validation ---------------------------------------------------------------------------
    def resolve_format(self, latent_format) -> LatentFormat:
        info = self.info
        if latent_format in (None, "auto", ""):
            if len(info.latent_formats) != 1:
                raise LatentMismatchError(
                    f"This PiD checkpoint ({info.describe()}) accepts several latent formats with the "
                    f"same channel count ({', '.join(info.latent_formats)}), which cannot be told apart "
                    f"from the tensor. Choose the latent format of the model that made the latent.")
            latent_format = info.latent_formats[0]
        fmt = get_latent_format(latent_format)
        if fmt.name != "normalized" and fmt.name not in info.latent_formats:
            raise LatentMismatchError(
                f"Latent format '{fmt.name}' ({fmt.description}) does not fit this PiD checkpoint, "
                f"which was trained on {'/'.join(info.latent_formats)} latents ({info.describe()}). "
                f"Load the PiD checkpoint made for {fmt.name} or pick the matching latent format.")
        return fmt

    def _check_latent(self, latent: torch.Tensor, fmt: LatentFormat) -> torch.Tensor:
        z = as_4d(latent)
        if z.dtype in (torch.bool,) or not (z.is_floating_point()):
            raise PiDInputError(
                f"latent has dtype {z.dtype}; expected a floating-point tensor. Connect the LATENT "
                f"from a sampler, VAE Encode or Load Latent.")
        if z.shape[0] < 1 or z.shape[-1] < 1 or z.shape[-2] < 1:
            raise PiDInputError(f"latent has an empty dimension: shape {tuple(z.shape)}.")
        ch = self.info.latent_channels
        if z.shape[1] != ch:
            raise LatentMismatchError(
                f"This PiD checkpoint ({self.info.describe()}) expects {ch}-channel latents; the "
                f"LATENT has {z.shape[1]} channels (shape {tuple(z.shape)}). Load the PiD checkpoint "
                f"for the model that made the latent, or decode a latent of that model.")
        if not bool(torch.isfinite(z).all()):
            raise PiDInputError(
                "latent contains NaN or infinite values; the sampler that produced it diverged "
                "(try another seed, fewer LoRAs, or fp32/bf16 instead of fp16).")
        return z

    def _check_text(self, text, batch: int) -> torch.Tensor:
        dim = self.net.cfg.text_dim
        if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[-1] != dim:
            seen = tuple(text.shape) if isinstance(text, torch.Tensor) else type(text).__name__
            raise PiDInputError(
                f"text features must be a tensor [B, L, {dim}] of Gemma-2-2B hidden states; got "
                f"{seen}. Encode the prompt with pid_core.text (or the PiD nodes' text encoder).")
        if text.shape[1] < 1 or text.shape[1] > self.net.cfg.text_tokens:
            raise PiDInputError(
                f"text features have {text.shape[1]} tokens; PiD takes 1..{self.net.cfg.text_tokens} "
                f"(the recipe in pid_core.text gives exactly {self.net.cfg.text_tokens}).")
        if text.shape[0] not in (1, batch):
            raise PiDInputError(
                f"text features have batch {text.shape[0]} but the latent batch is {batch}; pass one "
                f"prompt for all latents or one per latent.")
        if not bool(torch.isfinite(text).all()):
            raise PiDInputError("text features contain NaN or infinite values; re-encode the prompt.")
        return text.expand(batch, -1, -1)

    def check_output_size(self, size) -> tuple[int, int]:
        try:
            h, w = (int(size[0]), int(size[1]))
        except (TypeError, ValueError, IndexError):
            raise PiDInputError(f"output_size must be (height, width); got {size!r}.") from None
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            raise PiDInputError(f"output size {h}x{w} is invalid: both sides must be positive multiples "
                                f"of 16 (PiD works on 16x16 pixel patches).")
        env = self.info.envelope
        if env is not None and not (env[0] <= min(h, w) and max(h, w) <= env[1]):
            raise PiDInputError(
                f"output size {h}x{w} is outside what this checkpoint was trained for "
                f"({self.info.resolution}: sides {env[0]}..{env[1]} px); outside it PiD produces "
                f"artifacts. Choose a size in that range, or use a tiled decode for larger images.")
        return h, w

    # -- decode ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, sigma, text: torch.Tensor, *, seed: int = 0, steps: int = 4,
               latent_format=None, output_size=None,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Decode a raw LATENT at noise level ``sigma`` to ``[B, 3, H, W]`` float32 in [0, 1]."""
        fmt = self.resolve_format(latent_format)
        z = self._check_latent(latent, fmt)
        batch = z.shape[0]
        size = self.output_size_for(z.shape[-2:]) if output_size is None else output_size
        h, w = self.check_output_size(size)
        gen = make_generator(seed)
        t_schedule(steps)  # validate before any work
        y = self._check_text(text, batch)
        dev = self.device
        z, sig = fmt.to_pid_frame(fmt.process_in(z.to(dev)), sigma)
        y = y.to(dev)
        net = self.net
        feats = net.adapter_features(z, (h // net.cfg.patch_size, w // net.cfg.patch_size))

        def velocity(x, t):
            tt = torch.full((batch,), t, dtype=torch.float32, device=dev) * TIMESTEP_SCALE
            return net.forward_with_features(x, tt, y, feats, sig)

        noise = draw_noise((batch, 3, h, w), gen, dev)
        out = sample(velocity, noise, steps, lambda k: draw_noise((batch, 3, h, w), gen, dev), callback)
        return (out.float() + 1) / 2


def _envelope(resolution: str, release: str | None):
    if release is None:
        return None
    return ENVELOPE_2KTO4K if resolution == "2kto4k" else ENVELOPE_2K


def load_decoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device="cpu", dtype="auto",
                 name_hint: str | None = None, operations=nn) -> PiDDecoder:
    """Load a PiD decoder from a file path or a state dict (any supported key layout)."""
    loaded = load_net(source, device=device, dtype=dtype, name_hint=name_hint, operations=operations)
    det, cfg = loaded.detection, loaded.detection.config
    name = name_hint or (os.path.basename(str(source)) if not isinstance(source, Mapping) else "")
    info = DecoderInfo(
        family=det.family, version=det.version, resolution=det.resolution,
        latent_channels=cfg.latent_channels, latent_formats=det.formats, vae_factor=cfg.latent_down,
        sr_scale=cfg.sr_scale, envelope=_envelope(det.resolution, det.release),
        trained_sizes=SIZES_2K if det.resolution == "2k" else (),
        param_count=loaded.param_count, source_dtype=str(loaded.source_dtype).replace("torch.", ""),
        layout=loaded.layout, release=det.release, name=name)
    return PiDDecoder(loaded.net, info)


def with_envelope(decoder: PiDDecoder, envelope) -> PiDDecoder:
    """A decoder sharing ``decoder``'s net with another size envelope (None disables the check)."""
    return PiDDecoder(decoder.net, dataclasses.replace(decoder.info, envelope=envelope))
