"""The public decoder: ``load_decoder(...)`` -> ``PiDDecoder.decode(latent, sigma, text, ...)``.

A decode validates its inputs, maps the raw LATENT and its sigma to PiD's frame (latents.py), plans
whole image or tiles (memory.py), runs the adapter's conv trunk once, then the distilled sampler
(sampler.py, or tiling.py over tiles) with the network, and returns an image in [0, 1]. Nothing is
cached between decodes (beyond RoPE tables and an optional compiled graph), so an interrupted
decode leaves no state behind. A whole-image decode that runs out of memory is retried in tiles.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from . import memory
from .config import ENVELOPE_2K, ENVELOPE_2KTO4K, SIZES_2K, TIMESTEP_SCALE
from .errors import LatentMismatchError, NonFiniteOutputError, PiDInputError, PiDOutOfMemoryError
from .latents import LATENT_ABS_LIMIT, LatentFormat, as_4d, channel_hint, get_latent_format
from .loading import load_net
from .model import PiDNet
from .memory import DecodePlan
from .sampler import NOISE_DEVICES, NoiseSource, make_generator, sample, t_schedule
from .tiling import tiled_sample

log = logging.getLogger(__name__)

# An output whose aspect differs from the latent's by more than this factor is refused (the
# latent would be stretched); below it, nearest resampling absorbs the 16-px snapping of sides.
MAX_ASPECT_DISTORTION = 1.25


def _int_pair(size) -> tuple[int, int]:
    """``(H, W)`` of whole numbers (ints, or floats with no fraction), else PiDInputError."""
    try:
        h, w = size
        vals = []
        for v in (h, w):
            if isinstance(v, bool):
                raise TypeError
            f = float(v)
            if not f.is_integer():
                raise ValueError
            vals.append(int(f))
    except (TypeError, ValueError, OverflowError):
        raise PiDInputError(f"output_size must be (height, width) in whole pixels, multiples of 16 "
                            f"(e.g. (2048, 2048)); got {size!r:.60}.") from None
    return vals[0], vals[1]


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

    def __init__(self, net: PiDNet, info: DecoderInfo, compile: bool = False, compile_mode: str = "default"):
        self.net = net
        self.info = info
        # torch.compile the network call (one graph per output/tile size, first call slow). Off
        # by default: compilation takes minutes and needs a working Triton/C++ toolchain.
        self.compile = bool(compile)
        self.compile_mode = compile_mode
        self._compiled = None

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
            raise PiDInputError(
                f"latent has an empty dimension: shape {tuple(z.shape)}; expected [B,C,h,w] with "
                f"B, h and w at least 1. The node that made it produced no latent (an empty batch "
                f"or a 0-pixel crop); check that node's size and batch settings.")
        if z.is_meta:
            raise PiDInputError("latent is on the 'meta' device (shape only, no values); pass a "
                                "real tensor.")
        ch = self.info.latent_channels
        if z.shape[1] != ch:
            raise LatentMismatchError(
                f"This PiD checkpoint ({self.info.describe()}) expects {ch}-channel latents; the "
                f"LATENT has {z.shape[1]} channels{channel_hint(z.shape[1])} (shape "
                f"{tuple(z.shape)}). Load the PiD checkpoint for the model that made the latent, "
                f"or decode a latent of that model.")
        if not bool(torch.isfinite(z).all()):
            raise PiDInputError(
                "latent contains NaN or infinite values; the sampler that produced it diverged "
                "(try another seed, fewer LoRAs, or fp32/bf16 instead of fp16).")
        peak = float(z.abs().max())
        if peak > LATENT_ABS_LIMIT:
            raise PiDInputError(
                f"latent values reach {peak:.3g}; VAE latents stay far below {LATENT_ABS_LIMIT:g} "
                f"in magnitude, so this tensor is not a usable latent (wrongly scaled, or the "
                f"sampler overflowed). Connect the LATENT from a sampler, VAE Encode or Load Latent.")
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
            raise PiDInputError(
                "text features contain NaN or infinite values: the text encoder overflowed (e.g. "
                "Gemma-2 run in fp16). Re-encode the prompt with the text encoder in bf16 or fp32.")
        return text.expand(batch, -1, -1)

    def check_output_size(self, size, latent_hw=None) -> tuple[int, int]:
        """Validate ``(H, W)``; with ``latent_hw`` also refuse an aspect the latent does not have."""
        h, w = _int_pair(size)
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            near = f"{max(16, round(h / 16) * 16)}x{max(16, round(w / 16) * 16)}"
            raise PiDInputError(f"output size {h}x{w} is invalid: both sides must be positive multiples "
                                f"of 16 (PiD works on 16x16 pixel patches); the nearest valid size is "
                                f"{near}.")
        if latent_hw is not None:
            lh, lw = int(latent_hw[0]), int(latent_hw[1])
            off = (h * lw) / (w * lh)
            if max(off, 1 / off) > MAX_ASPECT_DISTORTION:
                fh, fw = self.output_size_for((lh, lw))
                raise PiDInputError(
                    f"output size {h}x{w} (H x W) has another shape than the {lh}x{lw} latent (which "
                    f"decodes to {fh}x{fw}): the picture would be stretched {max(off, 1 / off):.2f}x. "
                    f"Keep the latent's aspect (were height and width swapped?), or crop the latent "
                    f"first.")
        env = self.info.envelope
        if env is not None and not (env[0] <= min(h, w) and max(h, w) <= env[1]):
            raise PiDInputError(
                f"output size {h}x{w} is outside what this checkpoint was trained for "
                f"({self.info.resolution}: sides {env[0]}..{env[1]} px); outside it PiD produces "
                f"artifacts. Choose a size in that range, or use a tiled decode for larger images.")
        return h, w

    # -- tiling and memory ---------------------------------------------------------------------
    def check_tiled_output_size(self, size, tile=None, latent_hw=None) -> tuple[int, int]:
        """Validate ``(H, W)`` for a tiled decode; returns it.

        The envelope rule differs from ``check_output_size``: the image may be larger than the
        checkpoint's trained sizes (each tile is decoded as an image of its own), but its short
        side may not be below the envelope (tiles are never larger than the image), and an
        explicit ``tile = (th, tw)`` px must itself lie in the envelope once clamped to the image.
        """
        unbounded = PiDDecoder(self.net, dataclasses.replace(self.info, envelope=None))
        h, w = unbounded.check_output_size(size, latent_hw)
        env, res = self.info.envelope, self.info.resolution
        if max(h, w) > memory.MAX_TILED_SIDE:
            raise PiDInputError(
                f"output size {h}x{w} is too large for a tiled decode (sides up to "
                f"{memory.MAX_TILED_SIDE} px; one {memory.MAX_TILED_SIDE}^2 RGB buffer alone is "
                f"12 GiB). Choose a smaller output size.")
        if env is not None and min(h, w) < env[0]:
            raise PiDInputError(
                f"output size {h}x{w} is outside what this checkpoint was trained for ({res}: "
                f"sides {env[0]}..{env[1]} px): the short side is below {env[0]} px, which tiling "
                f"cannot change (a tile is never larger than the image). Choose a larger size.")
        if tile is not None:
            th, tw = tile
            if th <= 0 or tw <= 0 or th % 16 or tw % 16:
                near = f"{max(16, round(th / 16) * 16)}x{max(16, round(tw / 16) * 16)}"
                raise PiDInputError(
                    f"tile {th}x{tw} is invalid: both sides must be positive multiples of 16 (PiD "
                    f"works on 16x16 pixel patches); the nearest valid size is {near}.")
            th, tw = min(th, h), min(tw, w)
            if env is not None and not (env[0] <= min(th, tw) and max(th, tw) <= env[1]):
                raise PiDInputError(
                    f"tile {th}x{tw} is outside what this checkpoint was trained for ({res}: sides "
                    f"{env[0]}..{env[1]} px); each tile is decoded as an image of its own, so keep "
                    f"tile sides in that range (or use tile='auto').")
        return h, w

    def _default_budget(self) -> int | None:
        """Memory PiD may use on a CUDA device: free + cached-but-unused + its own weights there."""
        dev = self.device
        if dev.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        weights = sum(p.numel() * p.element_size() for p in self.net.parameters() if p.device == dev)
        return int(free + cached + weights)

    def plan(self, latent_shape, output_size=None, memory_budget_bytes: int | None = None,
             tile="auto", tile_overlap: int | None = None) -> DecodePlan:
        """How ``decode`` would run for a latent of ``latent_shape`` ([B, C, h, w] or 5-D).

        ``tile``: None = whole image; "auto" = whole if it fits ``memory_budget_bytes`` (default:
        what the CUDA device has for PiD; unlimited on the CPU) and the size is inside the
        checkpoint's envelope, else the largest tiles that fit; an int or (height, width) = tiles
        of that many px. Validates the size like ``decode`` (PiDInputError). Pure apart from
        reading the device's free memory when no budget is given for "auto".
        """
        shape = tuple(int(v) for v in latent_shape)
        batch = shape[0]
        size = self.output_size_for(shape[-2:]) if output_size is None else output_size
        latent_hw = None if output_size is None else shape[-2:]  # refuse a stretched explicit size
        req, overlap = _tile_request(tile, tile_overlap)
        cfg, dtype = self.net.cfg, self.net.s_embedder.proj.weight.dtype
        if req is None:
            h, w = self.check_output_size(size, latent_hw)
            return memory.whole_plan(cfg, h, w, batch, dtype, memory_budget_bytes)
        h, w = self.check_tiled_output_size(size, None if req == "auto" else req, latent_hw)
        budget = memory_budget_bytes
        if req == "auto":
            budget = self._default_budget() if budget is None else budget
            env = self.info.envelope
            return memory.plan_decode(cfg, h, w, batch, dtype, budget, max_tile=env[1] if env else None,
                                      overlap=overlap)
        return memory.tiled_plan(cfg, h, w, req, batch, dtype, budget, overlap,
                                 reason=f"tiles of {req[0]}x{req[1]} px requested")

    def _forward(self):
        """The network call: ``net.forward_with_features``, compiled when ``self.compile``."""
        if not self.compile:
            return self.net.forward_with_features
        key = (id(self.net), self.compile_mode)
        if self._compiled is None or self._compiled[0] != key:
            fn = torch.compile(self.net.forward_with_features, dynamic=False, mode=self.compile_mode)
            self._compiled = (key, fn)
        return self._compiled[1]

    def _free_memory(self) -> int | None:
        dev = self.device
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def _after_oom(self, plan: DecodePlan, error: str) -> DecodePlan:
        """Free what the failed attempt left and return a plan with smaller tiles (or raise)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        cfg, dtype = self.net.cfg, self.net.s_embedder.proj.weight.dtype
        h, w = plan.output_size
        nxt = memory.smaller_plan(cfg, plan, dtype)
        what = "whole image" if not plan.tiled else f"tiles of {plan.tile_size[0]}x{plan.tile_size[1]} px"
        if nxt is None:
            free = self._free_memory()
            th, tw = plan.tile_size or plan.output_size
            raise PiDOutOfMemoryError(
                f"Out of memory even at the smallest tile ({th}x{tw} px): decoding {h}x{w} (batch "
                f"{plan.batch}) needs about {plan.estimate.total / memory.GiB:.2f} GiB of working "
                f"memory ({plan.estimate.weights / memory.GiB:.2f} GiB of it weights), but only "
                f"{'an unknown amount' if free is None else f'{free / memory.GiB:.2f} GiB'} was "
                f"free on {self.device}. Free VRAM (unload other models), lower the batch size or "
                f"the output size, or use a lower compute dtype. ({error})")
        log.warning("PiD decode of %dx%d ran out of memory with %s (%s); retrying in tiles of %dx%d px "
                    "(overlap %d px, %d tiles)", h, w, what, error, nxt.tile_size[0], nxt.tile_size[1],
                    nxt.overlap, nxt.n_tiles)
        return nxt

    # -- decode ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, sigma, text: torch.Tensor, *, seed: int = 0, steps: int = 4,
               latent_format=None, output_size=None,
               callback: Callable[[int, int], None] | None = None, tile=None,
               tile_overlap: int | None = None, memory_budget_bytes: int | None = None,
               noise_device: str = "cpu") -> torch.Tensor:
        """Decode a raw LATENT at noise level ``sigma`` to ``[B, 3, H, W]`` float32 in [0, 1].

        ``tile``/``tile_overlap``/``memory_budget_bytes``: see ``plan`` (default: whole image,
        retried in tiles if it runs out of memory). ``callback(step, total)`` runs after every
        network call (``total = tiles x steps``) and may raise to interrupt. ``noise_device``:
        "cpu" (the same image on every device) or "device" (see sampler.NoiseSource). The
        result is on the compute device, or on the CPU for a tiled decode whose full-size
        canvas did not fit the budget (``plan(...).state_on_device`` is False).
        """
        fmt = self.resolve_format(latent_format)
        z = self._check_latent(latent, fmt)
        batch = z.shape[0]
        plan = self.plan(z.shape, output_size, memory_budget_bytes, tile=tile, tile_overlap=tile_overlap)
        make_generator(seed)  # validate before any work
        t_schedule(steps)
        y = self._check_text(text, batch)
        if noise_device not in NOISE_DEVICES:
            NoiseSource(seed, (1,), "cpu", noise_device)  # raises the documented error
        dev = self.device
        z, sig = fmt.to_pid_frame(fmt.process_in(z.to(dev)), sigma)
        y = y.to(dev)
        env = self.info.envelope
        if plan.tiled and env is not None and min(plan.tile_size) < env[0]:
            log.warning("PiD tiles of %dx%d px are below the checkpoint's trained sizes (%d..%d px) "
                        "because of the memory budget; expect softer detail or artifacts.",
                        *plan.tile_size, *env)
        log.debug("PiD decode plan: %s (%s)", plan.describe(), plan.reason)
        while True:
            try:
                out = self._run(plan, z, sig, y, seed, steps, noise_device, callback)
                break
            except torch.OutOfMemoryError as exc:
                error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "out of memory"
            plan = self._after_oom(plan, error)  # outside the except: the failed frames are gone
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            raise NonFiniteOutputError(
                f"PiD produced {bad} NaN/infinite pixel values with compute dtype "
                f"{str(self.net.s_embedder.proj.weight.dtype).replace('torch.', '')}: fp16 can overflow in "
                f"this network, or the checkpoint holds NaN weights. Use bf16 or fp32 in PiD Load "
                f"Model; if it persists, download the checkpoint again.")
        return (out.float() + 1) / 2

    def _run(self, plan: DecodePlan, z, sig, y, seed: int, steps: int, noise_device: str,
             callback) -> torch.Tensor:
        """Sample with ``plan``; inputs already on the device and in PiD's frame. x0 in [-1, 1]."""
        net, dev = self.net, self.device
        batch = z.shape[0]
        h, w = plan.output_size
        grid = (h // net.cfg.patch_size, w // net.cfg.patch_size)
        forward = self._forward()
        state_dev = dev if plan.state_on_device else torch.device("cpu")
        # the noise source starts drawing (on a worker, for an accelerator) before the adapter runs
        with NoiseSource(seed, (batch, 3, h, w), state_dev, noise_device) as noise:
            if not plan.tiled:
                tokens = net.adapter_tokens(z, grid)

                def velocity(x, t):
                    tt = torch.full((batch,), t, dtype=torch.float32, device=dev) * TIMESTEP_SCALE
                    return forward(x, tt, y, tokens, sig, plan.chunk)

                return sample(velocity, noise.next(), steps, lambda k: noise.next(), callback)
            aligned = net.adapter_input(z, grid).to(state_dev)
            return tiled_sample(forward, net, list(plan.tiles), aligned, y, sig, noise, steps, (h, w),
                                plan.overlap, dev, state_dev, plan.chunk, callback)


def _tile_request(tile, overlap):
    """Normalise ``tile`` to None | "auto" | (th, tw) and ``overlap`` to None | px."""
    def whole(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()

    req = None
    ok = True
    if tile is None:
        req = None
    elif isinstance(tile, str) and tile.lower() == "auto":
        req = "auto"
    elif whole(tile):
        req = (int(tile), int(tile))
    elif isinstance(tile, (tuple, list)) and len(tile) == 2 and all(whole(v) for v in tile):
        req = (int(tile[0]), int(tile[1]))
    else:
        ok = False
    if overlap is not None and not (whole(overlap) and overlap >= 0):
        ok = False
    if not ok:
        raise PiDInputError(
            f"tile settings are invalid: tile={tile!r:.40}, tile_overlap={overlap!r:.40}; expected "
            f"tile None (whole image), 'auto' (chosen from the memory budget), a side in px or "
            f"(height, width) in px (multiples of 16), and tile_overlap None or a number of px >= 0.")
    return req, None if overlap is None else int(overlap)


def _envelope(resolution: str, release: str | None):
    if release is None:
        return None
    return ENVELOPE_2KTO4K if resolution == "2kto4k" else ENVELOPE_2K


def load_decoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device="cpu", dtype="auto",
                 name_hint: str | None = None, operations=nn, compile: bool = False) -> PiDDecoder:
    """Load a PiD decoder from a file path or a state dict (any supported key layout).

    ``compile=True`` runs the network through ``torch.compile`` (see ``PiDDecoder``)."""
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
    return PiDDecoder(loaded.net, info, compile=compile)


def with_envelope(decoder: PiDDecoder, envelope) -> PiDDecoder:
    """A decoder sharing ``decoder``'s net with another size envelope (None disables the check)."""
    return PiDDecoder(decoder.net, dataclasses.replace(decoder.info, envelope=envelope),
                      compile=decoder.compile, compile_mode=decoder.compile_mode)
