"""The decode nodes' one path: encode the prompt -> load the net -> plan -> progress -> decode.

The memory request handed to ComfyUI's manager is the best plan's working memory; the plan that
runs is made once, after the net is on its device, from ComfyUI's budget there, and drives both the
progress bar and the decode. A batch (video frames) whose plan is worse than one frame's is decoded
frame by frame, progress counted over all frames. Progress carries a live preview unless the
user's preview method is "none" (``host.preview_side``).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..pid_core.decoding import memory
from ..pid_core.decoding.decoder import DecodeOptions
from ..pid_core.decoding.noise import MAX_SEED
from ..pid_core.decoding.progress import DEFAULT_PREVIEW_SIDE
from ..pid_core.errors import TextEncodingError
from . import host
from .text_encode import encode_prompt


class StepReporter:
    """pid_core's ``callback(step, total)`` and ``preview(image)`` for one decode: honours Cancel,
    and shows progress with the latest preview attached, as ``latent_preview.prepare_callback``
    does (``update_absolute(value, total, ("JPEG", image, max_size))``). ``preview`` is None when
    previews are off, so pid_core then builds none."""

    def __init__(self, pbar, side: Optional[int], total: Optional[int] = None):
        self.pbar, self.side, self.total, self.offset = pbar, side, total, 0
        self.preview = self._keep if side else None
        self._pending = None

    def _keep(self, image: torch.Tensor) -> None:
        self._pending = host.preview_image(image)

    def __call__(self, step: int, total: int) -> None:
        host.check_interrupted()
        shown, self._pending = self._pending, None
        self.pbar.update_absolute(self.offset + step, self.total or total,
                                  None if shown is None else ("JPEG", shown, self.side))


def decode(pid_model, latent: torch.Tensor, sigma, prompt: str, *, seed: int, steps: int,
           latent_format: str, noise_frame: Optional[str] = None, output_size=None,
           tile_size: int = 0, shared_noise: bool = False) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1], on the compute device, or on ComfyUI's intermediate device when
    decoded frame by frame (or when a tiled canvas did not fit). ``tile_size``: 0 = whole image or
    tiles as size and memory demand; else tiles of that side. ``shared_noise``: every item gets item
    0's noise (the same input frame gives the same output frame); else item i gets seed + i."""
    dec = pid_model.decoder
    tile = int(tile_size) if tile_size else "auto"
    if pid_model.text_encoder is None:
        raise TextEncodingError(
            "PiD needs the prompt encoded by Gemma-2-2B, but PiD Load Model has text_encoder = "
            "'none' and no CLIP connected. Put gemma_2_2b_it_elm_bf16.safetensors (Comfy-Org) in "
            "ComfyUI/models/text_encoders/ and select it in PiD Load Model.")
    text = encode_prompt(pid_model.text_encoder, [prompt])
    device = host.load_for_inference(pid_model.patcher, dec.net, dec.memory_request(latent.shape, output_size, tile))
    budget = host.memory_budget(device, memory.weight_bytes(dec.net.cfg, dec.dtype))
    plan = dec.plan(latent.shape, output_size, tile, memory_budget_bytes=budget)  # whole, or tiles
    frame = plan if latent.shape[0] == 1 else dec.plan((1, *latent.shape[1:]), output_size, tile,
                                                       memory_budget_bytes=budget)
    batch = latent.shape[0] if frame is not plan and worse(plan, frame) else 1
    per_call = (frame if batch > 1 else plan).progress_total(steps)
    report = StepReporter(host.progress_bar(per_call * batch), host.preview_side(), per_call * batch)
    options = DecodeOptions(noise_frame=noise_frame, shared_noise=shared_noise, callback=report,
                            preview=report.preview, preview_side=report.side or DEFAULT_PREVIEW_SIDE)
    if batch == 1:   # the CPU tensors ComfyUI handed over: checked there, moved by the decoder
        return dec.decode(latent, sigma, text, seed=seed, steps=steps, latent_format=latent_format, plan=plan,
                          options=options)
    out = None
    for i in range(batch):
        report.offset = i * per_call
        image = dec.decode(latent[i:i + 1], sigma, text, seed=seed if shared_noise else (seed + i) & MAX_SEED,
                           steps=steps, latent_format=latent_format, plan=frame, options=options)
        if out is None:
            out = torch.empty((batch, *image.shape[1:]), dtype=image.dtype, device=host.intermediate_device())
        out[i] = image[0]
        del image
    return out


def worse(batch_plan, frame_plan) -> bool:
    """Whether decoding a batch at once runs worse than frame by frame: tiled where a frame decodes
    whole, smaller tiles, or its canvas pushed out to system RAM."""
    if not batch_plan.tiled:
        return False
    return (not frame_plan.tiled or min(frame_plan.tile_size) > min(batch_plan.tile_size)
            or (frame_plan.state_on_device and not batch_plan.state_on_device))
