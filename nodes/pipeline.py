"""The decode nodes' one path: encode the prompt -> load the net -> plan -> progress -> decode.

The memory request handed to ComfyUI's manager is the best plan's working memory; the plan that
runs is made once, after the net is on its device, from the budget there, and drives both the
progress bar's total and the decode.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import host
from .resolve import require_text_encoder
from .text_encode import encode_prompt


def decode(pid_model, latent: torch.Tensor, sigma, prompt: str, *, seed: int, steps: int,
           latent_format: str, noise_frame: Optional[str] = None, output_size=None) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] on the compute device (or the CPU for a canvas that did not fit)."""
    dec = pid_model.decoder
    text = encode_prompt(require_text_encoder(pid_model), [prompt])
    device = host.load_for_inference(pid_model.patcher, dec.net, dec.memory_request(latent.shape, output_size))
    plan = dec.plan(latent.shape, output_size)  # whole image, or tiles when memory/size demand it
    pbar = host.progress_bar(plan.progress_total(steps))
    return dec.decode(latent.to(device), sigma, text.to(device), seed=seed, steps=steps,
                      latent_format=latent_format, noise_frame=noise_frame, output_size=output_size,
                      plan=plan, callback=host.step_callback(pbar))
