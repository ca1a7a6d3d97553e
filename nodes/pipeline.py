"""The decode nodes' one path: encode the prompt -> load the net -> plan -> progress -> decode.

The memory request handed to ComfyUI's manager is the best plan's working memory; the plan that
runs is made once, after the net is on its device, from the budget there, and drives both the
progress bar's total and the decode. Progress messages carry a live preview of the image when
the user's preview method is not "none" (``host.preview_side``).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..pid_core.decoding.decoder import DecodeOptions
from ..pid_core.decoding.progress import DEFAULT_PREVIEW_SIDE
from ..pid_core.errors import TextEncodingError
from . import host
from .text_encode import encode_prompt


class StepReporter:
    """pid_core's ``callback(step, total)`` and ``preview(image)`` for one decode: honours Cancel,
    and shows progress with the latest preview attached, as ``latent_preview.prepare_callback``
    does (``update_absolute(value, total, ("JPEG", image, max_size))``). ``preview`` is None when
    previews are off, so pid_core then builds none."""

    def __init__(self, pbar, side: Optional[int]):
        self.pbar, self.side = pbar, side
        self.preview = self._keep if side else None
        self._pending = None

    def _keep(self, image: torch.Tensor) -> None:
        self._pending = host.preview_image(image)

    def __call__(self, step: int, total: int) -> None:
        host.check_interrupted()
        shown, self._pending = self._pending, None
        self.pbar.update_absolute(step, total, None if shown is None else ("JPEG", shown, self.side))


def decode(pid_model, latent: torch.Tensor, sigma, prompt: str, *, seed: int, steps: int,
           latent_format: str, noise_frame: Optional[str] = None, output_size=None,
           tile_size: int = 0) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] on the compute device (or the CPU for a canvas that did not fit).
    ``tile_size``: 0 = whole image or tiles as size and memory demand; else tiles of that side."""
    dec = pid_model.decoder
    tile = int(tile_size) if tile_size else "auto"
    if pid_model.text_encoder is None:
        raise TextEncodingError(
            "PiD needs the prompt encoded by Gemma-2-2B, but PiD Load Model has text_encoder = "
            "'none' and no CLIP connected. Put gemma_2_2b_it_elm_bf16.safetensors (Comfy-Org) in "
            "ComfyUI/models/text_encoders/ and select it in PiD Load Model.")
    text = encode_prompt(pid_model.text_encoder, [prompt])
    host.load_for_inference(pid_model.patcher, dec.net, dec.memory_request(latent.shape, output_size, tile))
    plan = dec.plan(latent.shape, output_size, tile)  # whole, or tiles when memory/size demand it
    report = StepReporter(host.progress_bar(plan.progress_total(steps)), host.preview_side())
    options = DecodeOptions(noise_frame=noise_frame, callback=report, preview=report.preview,
                            preview_side=report.side or DEFAULT_PREVIEW_SIDE)
    # the CPU tensors ComfyUI handed over: checked there, moved by the decoder
    return dec.decode(latent, sigma, text, seed=seed, steps=steps, latent_format=latent_format, plan=plan,
                      options=options)
