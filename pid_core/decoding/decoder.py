"""The public decoder: ``load_decoder(...)`` -> ``PiDDecoder.plan(...)`` -> ``decode(...)``.

One straight line per decode: validate the inputs (the rules live in ``latents``, ``sizing``,
``text``, ``sampler``), map the raw LATENT and its sigma to PiD's frame, **plan** whole image or
tiles once (``memory``; the nodes plan after the net is on its device and pass the plan in, so
what they request and show is what runs), compute the adapter features once, then **sample** with
the one loop (``sampler.sample``) over a denoiser: the network for a whole image, a
``tiling.TiledDenoiser`` for tiles. Returns an image in [0, 1]. Nothing is cached between decodes
(beyond RoPE tables and an optional compiled graph), so an interrupted decode leaves no state
behind. A whole-image decode that runs out of memory is retried in tiles.
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

from ..errors import NonFiniteOutputError, PiDInputError, PiDOutOfMemoryError
from ..files.detect import Detection
from ..files.loading import load_net
from ..network.config import TIMESTEP_SCALE, Envelope
from ..network.model import PiDNet
from ..text.recipe import check_text_features
from . import memory
from .image_out import check_out_dtype, count_non_finite, to_image
from .latents import check_latent, choose_format
from .memory import DecodePlan
from .preview import DEFAULT_PREVIEW_SIDE, PREVIEW_BUDGET
from .sampler import NoiseSource, check_noise_device, make_generator, sample, t_schedule, velocity_to_x0
from .sizing import check_output_size, check_tiled_output_size, int_pair
from .tiling import TiledDenoiser, tile_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderInfo(Detection):
    """What a loaded decoder is: its ``Detection`` plus facts about the file it came from."""

    param_count: int = 0
    source_dtype: str = ""
    layout: str = ""
    name: str = ""

    @classmethod
    def from_detection(cls, det: Detection, **file_facts) -> "DecoderInfo":
        return cls(**{f.name: getattr(det, f.name) for f in dataclasses.fields(Detection)}, **file_facts)

    def describe(self) -> str:
        fmts = "/".join(self.latent_formats)
        return (f"PiD {self.version} {self.resolution} for {fmts} latents ({self.latent_channels} ch), "
                f"x{self.output_factor} output, {self.param_count / 1e6:.0f}M params"
                f"{', release ' + self.release if self.release else ''}")


class PiDDecoder:
    """A loaded PiD network plus what it is. ``decode`` runs on the net's current device/dtype."""

    def __init__(self, net: PiDNet, info: DecoderInfo, compile: bool = False, compile_mode: str = "default"):
        self.net, self.info = net, info
        # torch.compile the network call (one graph per output/tile size, first call slow). Off
        # by default: compilation takes minutes and needs a working Triton/C++ toolchain.
        self.compile, self.compile_mode = bool(compile), compile_mode
        self._compiled = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.dtype

    def output_size_for(self, latent_hw) -> tuple[int, int]:
        f = self.info.output_factor
        return int(latent_hw[0]) * f, int(latent_hw[1]) * f

    def plan(self, latent_shape, output_size=None, memory_budget_bytes: int | None = None,
             tile="auto", tile_overlap: int | None = None) -> DecodePlan:
        """How a decode of a latent of ``latent_shape`` ([B, C, h, w] or 5-D) will run.

        ``tile``: None = whole image; "auto" = whole if it fits ``memory_budget_bytes`` (default:
        ``memory.decode_budget`` of the net's device: unlimited on the CPU) and the size is inside
        the checkpoint's envelope, else the largest tiles that fit; an int or (height, width) =
        tiles of that many px. Validates the size like ``decode`` (PiDInputError).
        """
        shape = tuple(int(v) for v in latent_shape)
        batch, info = shape[0], self.info
        size = self.output_size_for(shape[-2:]) if output_size is None else output_size
        latent_hw = None if output_size is None else shape[-2:]  # refuse a stretched explicit size
        req, overlap = tile_request(tile, tile_overlap)
        cfg, env = self.net.cfg, info.envelope
        if req is None:
            h, w = check_output_size(size, env, latent_hw, info.output_factor)
            return memory.whole_plan(cfg, h, w, batch, self.dtype, memory_budget_bytes)
        h, w = check_tiled_output_size(size, env, None if req == "auto" else req, latent_hw,
                                       info.output_factor)
        if req != "auto":
            return memory.tiled_plan(cfg, h, w, req, batch, self.dtype, memory_budget_bytes, overlap,
                                     reason=f"tiles of {req[0]}x{req[1]} px requested")
        budget = memory_budget_bytes
        if budget is None:
            resident = sum(p.numel() * p.element_size() for p in self.net.parameters()
                           if p.device == self.device)
            budget = memory.decode_budget(self.device, resident)
        return memory.plan_decode(cfg, h, w, batch, self.dtype, budget,
                                  max_tile=env.max_side if env else None, overlap=overlap)

    def memory_request(self, latent_shape, output_size=None, tile="auto") -> int:
        """Working memory (bytes, weights excluded) to ask a host's memory manager for before
        the net is on its device: that of the best plan when memory is no object (whole image
        inside the envelope, else envelope-sized tiles; or the ``tile`` asked for). Plan after
        loading, from the real budget."""
        return self.plan(latent_shape, output_size, memory_budget_bytes=1 << 62, tile=tile).estimate.activations

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, sigma, text: torch.Tensor, *, seed: int = 0, steps: int = 4,
               latent_format=None, output_size=None, callback: Callable[[int, int], None] | None = None,
               tile=None, tile_overlap: int | None = None, memory_budget_bytes: int | None = None,
               noise_device: str = "cpu", noise_frame: str | None = None,
               plan: DecodePlan | None = None, preview: Callable[[torch.Tensor], None] | None = None,
               preview_side: int = DEFAULT_PREVIEW_SIDE, preview_budget: float | None = PREVIEW_BUDGET,
               out_dtype=torch.float32, parallel=None) -> torch.Tensor:
        """Decode a raw LATENT at noise level ``sigma`` to ``[B, 3, H, W]`` float32 in [0, 1].

        ``plan``: a plan from ``plan(...)`` for this latent (else one is made from ``tile``,
        ``tile_overlap`` and ``memory_budget_bytes``; default: whole image, retried in tiles if
        it runs out of memory). ``callback(step, total)`` runs after every network call
        (``total = plan.progress_total(steps)``) and may raise to interrupt. ``noise_device``:
        "cpu" (the same image on every device) or "device". ``noise_frame``: how a noisy latent is
        parameterised -- "flow", "comfy_flow" (a ComfyUI sampler's x_t / (1 - s)) or "ve"
        (``latents.LatentFormat.to_pid_frame``; default: the format's ``frame``). The result
        is on the compute device, or on the CPU when a tiled canvas did not fit the budget.
        ``preview(image)``: a live preview after network calls (``sampler.sample``; long side
        ``preview_side`` px, at most ``preview_budget`` of the time; None: after every call).
        ``out_dtype``: float32 (default), float16 or uint8 (0..255); the result is converted in
        place or in row slices, never with a full-size fp32 copy.
        ``parallel``: a ``distributed.TileParallel`` spreading a tiled plan's tiles over the
        processes of a torch.distributed group (every process gets the same image; make the
        plan with ``distributed.shared_plan`` so it is the same everywhere).
        """
        info = self.info
        z = check_latent(latent, info.latent_channels, info.describe())
        fmt = choose_format(latent_format, info.latent_formats, info.describe())
        if plan is None:
            plan = self.plan(z.shape, output_size, memory_budget_bytes, tile=tile, tile_overlap=tile_overlap)
        else:
            want = self.output_size_for(z.shape[-2:]) if output_size is None else int_pair(output_size)
            if (plan.batch, plan.output_size) != (z.shape[0], want):
                raise PiDInputError(
                    f"the decode plan is for batch {plan.batch} at {plan.output_size[0]}x"
                    f"{plan.output_size[1]}, but this decode has batch {z.shape[0]} at {want[0]}x"
                    f"{want[1]}; make the plan with plan() for this latent and output size.")
        make_generator(seed)  # validate before any work
        t_schedule(steps)
        check_noise_device(noise_device)
        y = check_text_features(text, z.shape[0], self.net.cfg.text_dim, self.net.cfg.text_tokens)
        dev = self.device
        z, sig = fmt.to_pid_frame(fmt.process_in(z.to(dev)), sigma, noise_frame)
        env = info.envelope
        if plan.tiled and env is not None and min(plan.tile_size) < env.min_side:
            log.warning("PiD tiles of %dx%d px are below the checkpoint's trained sizes (%d..%d px) "
                        "because of the memory budget; expect softer detail or artifacts.",
                        *plan.tile_size, env.min_side, env.max_side)
        log.debug("PiD decode plan: %s (%s)", plan.describe(), plan.reason)
        out_dtype = check_out_dtype(out_dtype)
        self._check_host_memory(plan)
        show = {} if preview is None else {"preview": preview, "preview_side": preview_side,
                                           "preview_budget": preview_budget}
        while True:
            try:
                out = self._run(plan, z, sig, y.to(dev), seed, steps, noise_device, callback, show, parallel)
                break
            except torch.OutOfMemoryError as exc:
                error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "out of memory"
                if parallel is not None:   # the other processes wait in a collective: no retry
                    raise parallel.out_of_memory(plan, error) from exc
            plan = self._retry_plan(plan, error)  # outside the except: the failed frames are gone
        bad = count_non_finite(out)
        if bad:
            raise NonFiniteOutputError(
                f"PiD produced {bad} NaN/infinite pixel values with compute dtype "
                f"{str(self.dtype).replace('torch.', '')}: fp16 can overflow in this network, or the checkpoint "
                f"holds NaN weights. Use the bf16 or fp32 compute dtype; if it persists, download "
                f"the checkpoint again.", input_name="dtype")
        return to_image(out, out_dtype)

    def _run(self, plan: DecodePlan, z, sig, y, seed: int, steps: int, noise_device: str,
             callback, show=None, parallel=None) -> torch.Tensor:
        """Sample with ``plan``; inputs already on the device and in PiD's frame. x0 in [-1, 1]."""
        net, dev, forward = self.net, self.device, self._forward()
        show = show or {}
        h, w = plan.output_size
        grid = (h // net.cfg.patch_size, w // net.cfg.patch_size)
        state_dev = dev if plan.state_on_device else torch.device("cpu")

        def velocity(x, t, tokens):
            tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device) * TIMESTEP_SCALE
            return forward(x, tt, y, tokens, sig, plan.chunk)

        # the noise source starts drawing (on a worker, for an accelerator) before the adapter runs
        with NoiseSource(seed, (z.shape[0], 3, h, w), state_dev, noise_device) as noise:
            if plan.tiled:
                denoise = TiledDenoiser(velocity, net.lq_proj, net.lq_proj.align(z, grid).to(state_dev),
                                        plan.tiles, (h, w), plan.overlap, dev, state_dev, parallel)
                return sample(denoise, noise, steps, callback, denoise.calls_per_step, **show)
            tokens = net.lq_proj.encode(z, grid)

            def whole_image(x, t, tick):
                x0 = velocity_to_x0(x, t, velocity(x, t, tokens))
                tick(x0)
                return x0

            return sample(whole_image, noise, steps, callback, **show)

    def _forward(self):
        """The network call: ``net.velocity``, compiled when ``self.compile``."""
        if not self.compile:
            return self.net.velocity
        key = (id(self.net), self.compile_mode)
        if self._compiled is None or self._compiled[0] != key:
            self._compiled = (key, torch.compile(self.net.velocity, dynamic=False, mode=self.compile_mode))
        return self._compiled[1]

    def _check_host_memory(self, plan: DecodePlan) -> None:
        """Refuse, before any work, a tiled decode whose canvas would live in system RAM that is
        not available (rather than letting the OS kill the process midway)."""
        on_cpu = self.device.type == "cpu" or not plan.state_on_device
        need = memory.host_bytes(self.net.cfg, plan, self.dtype) if on_cpu else 0
        free = memory.available_bytes("cpu") if need else None
        if free is None or need <= free:
            return
        h, w = plan.output_size
        per_px = need / (plan.batch * h * w)
        raise PiDOutOfMemoryError(
            f"a {h}x{w} tiled decode (batch {plan.batch}) keeps its full-size canvas in system RAM: "
            f"it needs about {need / memory.GiB:.1f} GiB ({per_px:.0f} bytes per output pixel), but "
            f"only {free / memory.GiB:.1f} GiB is available. Close other programs, or choose a "
            f"smaller output size (about {free / per_px / 1e6:.0f} megapixels fit now).")

    def _retry_plan(self, plan: DecodePlan, error: str) -> DecodePlan:
        """Free what the failed attempt left and return a plan with smaller tiles (or raise)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        h, w = plan.output_size
        nxt = memory.smaller_plan(self.net.cfg, plan, self.dtype)
        if nxt is None:
            free = memory.available_bytes(self.device)
            th, tw = plan.tile_size or plan.output_size
            raise PiDOutOfMemoryError(
                f"Out of memory even at the smallest tile ({th}x{tw} px): decoding {h}x{w} (batch "
                f"{plan.batch}) needs about {plan.estimate.total / memory.GiB:.2f} GiB of working "
                f"memory ({plan.estimate.weights / memory.GiB:.2f} GiB of it weights), but only "
                f"{'an unknown amount' if free is None else f'{free / memory.GiB:.2f} GiB'} was "
                f"free on {self.device}. Free VRAM (unload other models), lower the batch size or "
                f"the output size, or use a lower compute dtype. ({error})")
        what = "whole image" if not plan.tiled else f"tiles of {plan.tile_size[0]}x{plan.tile_size[1]} px"
        log.warning("PiD decode of %dx%d ran out of memory with %s (%s); retrying in tiles of %dx%d px "
                    "(overlap %d px, %d tiles)", h, w, what, error, nxt.tile_size[0], nxt.tile_size[1],
                    nxt.overlap, nxt.n_tiles)
        return nxt


def load_decoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device="cpu", dtype="auto",
                 name_hint: str | None = None, operations=nn, compile: bool = False,
                 quantised: bool = False) -> PiDDecoder:
    """Load a PiD decoder from a file path or a state dict (any supported key layout).

    ``compile=True`` runs the network through ``torch.compile`` (see ``PiDDecoder``);
    ``quantised=True`` with host ``operations`` that load quantised layers (``loading.load_net``)."""
    loaded = load_net(source, device=device, dtype=dtype, name_hint=name_hint, operations=operations,
                      quantised=quantised)
    name = name_hint or (os.path.basename(str(source)) if not isinstance(source, Mapping) else "")
    info = DecoderInfo.from_detection(
        loaded.detection, param_count=loaded.param_count,
        source_dtype=str(loaded.source_dtype).replace("torch.", ""),
        layout=loaded.layout, name=name)
    return PiDDecoder(loaded.net, info, compile=compile)


def with_envelope(decoder: PiDDecoder, envelope) -> PiDDecoder:
    """A decoder sharing ``decoder``'s net with another size envelope (None disables the check)."""
    if envelope is not None and not isinstance(envelope, Envelope):
        envelope = Envelope(int(envelope[0]), int(envelope[1]), decoder.info.resolution)
    return PiDDecoder(decoder.net, dataclasses.replace(decoder.info, envelope=envelope),
                      compile=decoder.compile, compile_mode=decoder.compile_mode)
