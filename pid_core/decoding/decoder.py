"""The public decoder: ``load_decoder(...)`` -> ``PiDDecoder.plan(...)`` -> ``decode(...)``.

A decode checks its inputs where they are used, maps the raw LATENT and its sigma to PiD's frame,
and runs its plan (whole image or tiles, ``memory``) through the one loop (``sampler.sample``)
over a denoiser: the network for a whole image, ``tiling.TiledDenoiser`` for tiles. Each network
call goes through one function (velocity -> x0 -> progress). Nothing is kept between decodes but
compiled graphs; a whole-image decode that runs out of memory is retried in tiles.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NonFiniteOutputError, PiDInputError, PiDOutOfMemoryError
from ..files.detect import DecoderInfo
from ..files.loading import load_net
from ..network.blocks import sdpa
from ..network.config import TIMESTEP_SCALE
from ..network.model import PiDNet
from ..text.recipe import check_text_features
from . import memory
from .compile import COMPILE_MODES, CompiledNetwork
from .image_out import OUT_DTYPES, count_non_finite, to_image
from .latents import check_latent, choose_format
from .memory import DecodePlan
from .noise import Noise
from .progress import DEFAULT_PREVIEW_SIDE, PREVIEW_BUDGET, PreviewCanvas, Progress
from .sampler import sample, t_schedule, velocity_to_x0
from .sizing import check_output_size, check_tiled_output_size
from .tiling import TiledDenoiser, tile_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeOptions:
    """How a decode runs beyond its inputs (defaults: upstream's behaviour); each checked where used."""

    noise_frame: str | None = None      # how a noisy latent is parameterised (latents.FRAMES); None: the format's
    noise_device: str = "cpu"           # "cpu": the same image on every device; "device": drawn there
    shared_noise: bool = False          # one noise draw for the whole batch (frames of a video)
    out_dtype: torch.dtype = torch.float32   # float32 / float16 in [0, 1], or uint8 0..255
    callback: Callable[[int, int], None] | None = None   # (done, total) after each network call; may raise
    preview: Callable[[torch.Tensor], None] | None = None  # gets [h, w, 3] uint8 CPU previews
    preview_side: int = DEFAULT_PREVIEW_SIDE
    preview_budget: float | None = PREVIEW_BUDGET   # share of the time previews may take (None: all calls)
    parallel: object = None             # frontends.distributed.TileParallel: tiles over processes



class PiDDecoder:
    """A loaded PiD network plus what it is. ``decode`` runs on the net's current device/dtype;
    ``compile``: None (eager) or a ``torch.compile`` mode for the network call (``decoding.compile``)."""

    def __init__(self, net: PiDNet, info: DecoderInfo, compile: str | None = None):
        if compile is not None and compile not in COMPILE_MODES:
            raise PiDInputError(f"compile={compile!r} is not supported; use None (off) or one of "
                                f"{', '.join(COMPILE_MODES)}.", input_name="compile")
        self.net, self.info, self.compile = net, info, compile
        self.network = net.velocity if compile is None else CompiledNetwork(net.velocity, compile)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.dtype

    def plan(self, latent_shape, output_size=None, tile="auto", tile_overlap: int | None = None,
             memory_budget_bytes: int | None = None) -> DecodePlan:
        """How a decode of a latent of ``latent_shape`` ([B, C, h, w] or 5-D) will run.

        ``output_size``: (H, W) px (default: the latent times the output factor). ``tile``: None =
        whole image; "auto" = whole if it fits the budget (default: ``memory.decode_budget`` of
        the net's device, unlimited on the CPU) and the checkpoint's envelope, else the largest
        tiles that fit; an int or (height, width) = tiles of that many px.
        """
        shape = tuple(map(int, latent_shape))
        batch, lhw, info, cfg = shape[0], shape[-2:], self.info, self.net.cfg
        f, env = info.output_factor, info.envelope
        size = (lhw[0] * f, lhw[1] * f) if output_size is None else output_size
        latent_hw = None if output_size is None else lhw   # refuse a stretched explicit size
        req, overlap = tile_request(tile, tile_overlap)
        budget = memory_budget_bytes
        if req is None:
            h, w = check_output_size(size, env, latent_hw, f)
            plan = memory.whole_plan(cfg, h, w, batch, self.dtype, budget)
        else:
            h, w = check_tiled_output_size(size, env, None if req == "auto" else req, latent_hw, f)
            if req != "auto":
                plan = memory.tiled_plan(cfg, h, w, req, batch, self.dtype, budget, overlap,
                                         reason=f"tiles of {req[0]}x{req[1]} px requested")
            else:
                if budget is None:
                    budget = memory.decode_budget(self.device, memory.weight_bytes(cfg, self.dtype))
                plan = memory.plan_decode(cfg, h, w, batch, self.dtype, budget,
                                          max_tile=env.max_side if env else None, overlap=overlap)
        return dataclasses.replace(plan, latent_size=lhw)

    def memory_request(self, latent_shape, output_size=None, tile="auto") -> int:
        """Working memory (bytes, weights excluded) to ask a host's memory manager for before the
        net is on its device: that of the best plan when memory is no object."""
        return self.plan(latent_shape, output_size, tile, memory_budget_bytes=1 << 62).estimate.activations

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, sigma, text: torch.Tensor, *, seed: int = 0, steps: int = 4,
               latent_format=None, plan: DecodePlan | None = None,
               options: DecodeOptions | None = None) -> torch.Tensor:
        """Decode a raw LATENT at noise level ``sigma`` to ``[B, 3, H, W]`` in [0, 1] (float32 unless
        ``options.out_dtype``), on the compute device (on the CPU when a tiled canvas is kept there).

        ``text``: Gemma features ``[1 or B, L, 2304]`` (``text.recipe``). ``plan``: from ``plan(...)``
        for this latent (default: the whole image at the latent's size). Pass the CPU tensors the
        host handed over: they are checked there, then moved.
        """
        opts, info = options or DecodeOptions(), self.info
        if opts.out_dtype not in OUT_DTYPES:
            raise PiDInputError(f"out_dtype={opts.out_dtype!r} is not supported; choose torch.float32 "
                                f"(default), torch.float16 or torch.uint8 (0..255).")
        z = check_latent(latent, info)
        fmt = choose_format(latent_format, info)
        if plan is None:
            plan = self.plan(z.shape, tile=None)
        elif (plan.batch, plan.latent_size) != (z.shape[0], tuple(z.shape[-2:])):
            raise PiDInputError(f"the decode plan is for batch {plan.batch} of {plan.latent_size} latents, but this "
                                f"latent is {tuple(z.shape)}; make the plan with plan() for this latent.")
        times = t_schedule(steps)
        y = check_text_features(text, z.shape[0], self.net.cfg.text_dim, self.net.cfg.text_tokens)
        z, sig = fmt.to_pid_frame(fmt.normalize(z.to(self.device)), sigma, opts.noise_frame)
        # upstream hands PiD the latent in bf16 whatever the compute dtype (nv-tlabs/PiD @2c8814c
        # pid/_src/inference/decoder.py, from_clean.py); the adapter casts it to the weights' dtype
        z = z.to(torch.bfloat16)
        if plan.tiled and info.envelope is not None and min(plan.tile_size) < info.envelope.min_side:
            log.warning("PiD tiles of %dx%d px are below the checkpoint's trained sizes (%d..%d px) "
                        "because of the memory budget; expect softer detail or artifacts.",
                        *plan.tile_size, info.envelope.min_side, info.envelope.max_side)
        if plan.tiled:   # a canvas in system RAM that cannot fit is refused before any work
            memory.check_host_memory(self.net.cfg, plan, self.dtype,
                                     self.device.type == "cpu" or not plan.state_on_device)
        while True:
            try:
                out = self._run(plan, z, sig, y.to(self.device), seed, times, opts)
                break
            except torch.OutOfMemoryError as exc:
                error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "out of memory"
                if opts.parallel is not None:   # the other processes wait in a collective: no retry
                    raise opts.parallel.out_of_memory(plan, error) from exc
            plan = self._retry_plan(plan, error)  # outside the except: the failed frames are gone
        bad = count_non_finite(out)
        if bad:
            raise NonFiniteOutputError(
                f"PiD produced {bad} NaN/infinite pixel values with compute dtype "
                f"{str(self.dtype).replace('torch.', '')}: fp16 can overflow in this network, an attention kernel "
                f"can return NaN (SageAttention has been reported to with PiD FLUX.2), or the checkpoint holds "
                f"NaN weights. Use the bf16 or fp32 compute dtype and PyTorch's attention; if it persists, "
                f"download the checkpoint again.", input_name="dtype")
        return to_image(out, opts.out_dtype)

    def _run(self, plan: DecodePlan, z, sig, y, seed: int, times, opts: DecodeOptions) -> torch.Tensor:
        """Sample with ``plan``; inputs on the device and in PiD's frame. Returns x0 in [-1, 1]."""
        net, dev, network = self.net, self.device, self.network
        (h, w), p = plan.output_size, net.cfg.patch_size
        state_dev = dev if plan.state_on_device else torch.device("cpu")
        canvas = None if opts.preview is None else PreviewCanvas((h, w), opts.preview_side, opts.preview,
                                                                 opts.preview_budget)
        progress = Progress(plan.progress_total(len(times) - 1), opts.callback, canvas)

        def x0_of(x, t, tokens, at=(0, 0)):   # one network call: velocity -> clean estimate -> progress
            tt = torch.full((x.shape[0],), t * TIMESTEP_SCALE, dtype=torch.float32, device=x.device)
            x0 = velocity_to_x0(x, t, network(x, tt, y, tokens, sig, plan.chunk))
            progress.tick(x0, at)
            return x0

        # the noise starts drawing (on a worker, for an accelerator) before the adapter runs
        noise = Noise(seed, (z.shape[0], 3, h, w), state_dev, opts.noise_device, opts.shared_noise)
        try:
            if plan.tiled:
                den = TiledDenoiser(x0_of, net.lq_proj, net.lq_proj.align(z, (h // p, w // p)).to(state_dev),
                                    plan.tiles, (h, w), plan.overlap, dev, state_dev, opts.parallel)
                progress.total = den.calls_per_step * (len(times) - 1)
            else:
                den = functools.partial(x0_of, tokens=net.lq_proj.encode(z, (h // p, w // p)))
            return sample(den, noise, times)
        finally:
            noise.close()

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
        return dataclasses.replace(nxt, latent_size=plan.latent_size)


def load_decoder(source: str | os.PathLike | Mapping[str, torch.Tensor], device="cpu", dtype="auto",
                 name_hint: str | None = None, operations=nn, compile: str | None = None,
                 quantised: bool = False, attention=sdpa) -> PiDDecoder:
    """Load a PiD decoder from a file path or a state dict (any supported key layout).

    ``compile``: a ``torch.compile`` mode for the network call (see ``PiDDecoder``); ``quantised``
    with host ``operations`` that load quantised layers (``files.loading.load_net``); ``attention``:
    the attention function of every block (``network.blocks.sdpa``'s contract)."""
    net, info = load_net(source, device=device, dtype=dtype, name_hint=name_hint, operations=operations,
                         quantised=quantised, attention=attention)
    return PiDDecoder(net, info, compile=compile)
