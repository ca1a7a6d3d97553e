"""PiD text features: upstream's Gemma-2-2B prompt recipe (nv-tlabs/PiD @2c8814c
``pid/_src/models/pixeldit_model.py``, ``_encode_text_raw``): ``CHI_PREAMBLE + caption`` tokenised
with BOS, no EOS, right-truncated and right-padded (pad id 0) to ``n_chi + 298`` tokens; Gemma-2-2B-it's
final-norm hidden states; position 0 and the last 299 kept -> ``[B, 300, 2304]`` float32. Pad
positions keep their states (the DiT gets no mask). The empty caption gets the preamble too, as
upstream (ComfyUI's ``pixeldit`` type drops it). Only torch is needed here; ``gemma_hf`` runs the
recipe with ``transformers``.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from ..errors import PiDInputError, TextEncodingError
from ..network.config import TEXT_DIM, TEXT_TOKENS

log = logging.getLogger(__name__)

__all__ = [
    "CHI_PREAMBLE", "TEXT_TOKENS", "TEXT_DIM", "TokenBatch", "TextEncoderLike",
    "build_token_batch", "select_pid_positions", "encode_captions", "check_text_features",
]

# The "CHI" prompt, verbatim: nv-tlabs/PiD @ 2c8814c2b91cc41a2be7809962c891e0d0ccff5f,
# pid/_src/configs/pid/experiment_2k/shared_config.py ``_CHI_PROMPT`` (identical in
# experiment_2kto4k and experiment_2kto4k_v1pt5), joined with "\n" as in
# pid/_src/models/pixeldit_model.py. Equal to ComfyUI's ``_PIXELDIT_CHI_PROMPT``
# (comfy/text_encoders/pixeldit.py). 1057 characters, ends with "User Prompt: ".
CHI_PREAMBLE = "\n".join((
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions '
    "suitable for image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, "
    "and spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round "
    "shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red "
    "flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring "
    "glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus "
    "passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any "
    "additional commentary or evaluations:",
    "User Prompt: ",
))

CAPTION_TOKENS = TEXT_TOKENS - 2  # max_length = n_chi + 300 - 2 (upstream max_length_all)


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and mask for a batch of captions, both LongTensor ``[B, n_chi + 298]``."""

    input_ids: Tensor
    attention_mask: Tensor
    n_chi: int  # preamble tokens including BOS

    @property
    def max_length(self) -> int:
        return self.n_chi + CAPTION_TOKENS


@runtime_checkable
class TextEncoderLike(Protocol):
    """What :func:`encode_captions` needs from a Gemma-2 text encoder."""

    bos_id: int
    pad_id: int

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` WITHOUT BOS (and without EOS)."""

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final-norm hidden states ``[B, N, 2304]`` for ``[B, N]`` ids and mask."""


def build_token_batch(
    captions: Sequence[str],
    tokenize: Callable[[str], list[int]],
    *,
    bos_id: int,
    pad_id: int = 0,
) -> TokenBatch:
    """Tokenise ``CHI_PREAMBLE + caption`` for each caption, with BOS, to ``n_chi + 298`` tokens.

    Longer sequences are right-truncated (as HF ``truncation=True``), shorter ones right-padded
    with ``pad_id``; ``attention_mask`` is 1 on real tokens.
    """
    if isinstance(captions, str):
        raise PiDInputError(
            f"captions must be a list of strings; got a single str ({captions[:40]!r}). Wrap it in a list.")
    if not isinstance(captions, (list, tuple)) or not captions:
        raise PiDInputError(f"captions must be a non-empty list of strings; got {captions!r:.80}. "
                            f"Pass one prompt per latent, e.g. [\"a red fox\"] ([\"\"] for none).")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise PiDInputError(f"captions must all be str; caption {i} is a {type(c).__name__}.")
    if not callable(tokenize):
        raise PiDInputError(f"tokenize must be callable (text -> list[int]); got {type(tokenize).__name__}.")
    for name, value in (("bos_id", bos_id), ("pad_id", pad_id)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PiDInputError(f"{name} must be a non-negative int token id; got {value!r}.")

    n_chi = 1 + len(_tokenize_checked(tokenize, CHI_PREAMBLE, bos_id))
    max_len = n_chi + CAPTION_TOKENS
    ids = torch.full((len(captions), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(captions), max_len), dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens = [bos_id] + _tokenize_checked(tokenize, CHI_PREAMBLE + caption, bos_id)
        if len(tokens) > max_len:
            log.warning(
                "prompt %d has %d tokens; PiD reads at most %d prompt tokens (upstream recipe), so "
                "the last %d are ignored. Shorten the prompt if its end matters for detail.",
                row, len(tokens) - n_chi, CAPTION_TOKENS, len(tokens) - max_len)
            tokens = tokens[:max_len]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return TokenBatch(input_ids=ids, attention_mask=mask, n_chi=n_chi)


def select_pid_positions(hidden: Tensor) -> Tensor:
    """Keep position 0 (BOS) and the last 299 positions: ``[B, N, D] -> [B, 300, D]``."""
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        shape = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise TextEncodingError(f"hidden states must be a 3-D tensor [B, N, D]; got {shape}.")
    if hidden.shape[1] < TEXT_TOKENS:
        raise TextEncodingError(
            f"hidden states have {hidden.shape[1]} positions; PiD needs at least {TEXT_TOKENS} "
            f"(BOS + the last {TEXT_TOKENS - 1}). Build the ids with build_token_batch."
        )
    return torch.cat([hidden[:, :1], hidden[:, -(TEXT_TOKENS - 1):]], dim=1)


@torch.no_grad()
def encode_captions(
    captions: Sequence[str],
    encoder: TextEncoderLike,
    *,
    text_dim: Optional[int] = TEXT_DIM,
) -> Tensor:
    """Captions -> PiD text features, float32 ``[B, 300, text_dim]`` on the encoder's device.

    ``text_dim=None`` skips the width check (tiny test encoders).
    """
    if not isinstance(encoder, TextEncoderLike):
        missing = [a for a in ("tokenize", "hidden_states", "bos_id", "pad_id") if not hasattr(encoder, a)]
        raise TextEncodingError(
            f"text encoder {type(encoder).__name__} lacks {', '.join(missing)}; expected an object "
            "with tokenize(text) -> list[int], hidden_states(ids, mask), bos_id and pad_id "
            "(e.g. pid_core.gemma_hf.TransformersGemmaEncoder)."
        )
    batch = build_token_batch(captions, encoder.tokenize, bos_id=encoder.bos_id, pad_id=encoder.pad_id)
    hidden = encoder.hidden_states(batch.input_ids, batch.attention_mask)
    expected = tuple(batch.input_ids.shape)
    if not isinstance(hidden, Tensor) or hidden.dim() != 3 or tuple(hidden.shape[:2]) != expected:
        shape = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise TextEncodingError(
            f"text encoder returned hidden states of shape {shape}; expected "
            f"[{expected[0]}, {expected[1]}, {text_dim or 'D'}] (one state per input token)."
        )
    if text_dim is not None and hidden.shape[2] != text_dim:
        raise TextEncodingError(
            f"text encoder returned {hidden.shape[2]}-dim hidden states; PiD needs {text_dim} "
            "(Gemma-2-2B final-norm output). Load the Gemma-2-2B-it text encoder."
        )
    return select_pid_positions(hidden).to(torch.float32)


def check_text_features(text, batch: int, dim: int = TEXT_DIM, max_tokens: int = TEXT_TOKENS) -> Tensor:
    """Validate ``[1 or B, L, dim]`` features for a latent batch of ``batch``; returns them
    expanded to ``[B, L, dim]``."""
    if not isinstance(text, Tensor) or text.dim() != 3 or text.shape[-1] != dim:
        seen = tuple(text.shape) if isinstance(text, Tensor) else type(text).__name__
        raise PiDInputError(
            f"text features must be a tensor [B, L, {dim}] of Gemma-2-2B hidden states; got "
            f"{seen}. Encode the prompt with pid_core.text (or the PiD nodes' text encoder).", input_name="text")
    if text.shape[1] < 1 or text.shape[1] > max_tokens:
        raise PiDInputError(
            f"text features have {text.shape[1]} tokens; PiD takes 1..{max_tokens} "
            f"(the recipe in pid_core.text gives exactly {max_tokens}).", input_name="text")
    if not bool(torch.isfinite(text).all()):
        raise PiDInputError("text features contain NaN or infinite values: the text encoder "
                            "overflowed (e.g. Gemma-2 run in fp16). Re-encode the prompt with the "
                            "text encoder in bf16 or fp32.", input_name="text")
    if text.shape[0] not in (1, batch):
        raise PiDInputError(f"text features have batch {text.shape[0]} but the latent batch is "
                            f"{batch}; pass one prompt for all latents or one per latent.", input_name="text")
    return text.expand(batch, -1, -1)


def _tokenize_checked(tokenize, text: str, bos_id: int) -> list[int]:
    ids = []
    for i in tokenize(text):
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TextEncodingError(f"tokenize() must return a list of int token ids; got {i!r} among them.")
        ids.append(int(i))
    if ids and ids[0] == bos_id:
        raise TextEncodingError(
            f"tokenize() returned ids starting with BOS ({bos_id}); it must not add BOS "
            "(build_token_batch adds it). Use add_special_tokens=False / add_bos=False."
        )
    return ids
