"""PiD text features: the Gemma-2-2B prompt recipe of upstream PiD (PID_SPEC §6).

Recipe (nv-tlabs/PiD ``PixelDiTModel._encode_text_raw``):

1. text = CHI_PREAMBLE + caption (plain concatenation);
2. tokenise with BOS, no EOS, right-truncate and right-pad (pad id 0) to
   ``n_chi + 298`` tokens, where ``n_chi`` is the token count of the preamble including BOS;
3. run Gemma-2-2B-it and take ``last_hidden_state`` (after the final norm, 2304-d);
4. keep position 0 (BOS) and the last 299 positions -> ``[B, 300, 2304]`` float32.

Pad positions still produce hidden states and PiD sees them (the DiT gets no mask).

Empty captions: we follow upstream, which prepends the preamble to every caption, the empty
one included. ComfyUI's ``pixeldit`` CLIP type instead encodes an empty or whitespace prompt
as ``[BOS] + 299 pads`` without the preamble, and does not prefix a prompt that already starts
with the preamble. We keep upstream's behaviour because it is the recipe the released
checkpoints were trained and evaluated with, so an empty prompt conditions PiD exactly as in
the reference inference code.

Only ``torch`` is needed for the recipe itself; :class:`TransformersGemmaEncoder` uses the
optional ``transformers`` package.
"""

from __future__ import annotations

import logging
import numbers
import re
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

from .config import TEXT_DIM, TEXT_TOKENS
from .errors import PiDInputError, TextEncodingError

log = logging.getLogger(__name__)

__all__ = [
    "CHI_PREAMBLE", "TEXT_TOKENS", "TEXT_DIM", "TokenBatch", "TextEncoderLike",
    "build_token_batch", "select_pid_positions", "encode_captions", "TransformersGemmaEncoder",
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
    captions = _check_captions(captions)
    if not callable(tokenize):
        raise PiDInputError(f"tokenize must be callable (text -> list[int]); got {type(tokenize).__name__}.")
    bos_id = _check_token_id("bos_id", bos_id)
    pad_id = _check_token_id("pad_id", pad_id)

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
    missing = [a for a in ("tokenize", "hidden_states", "bos_id", "pad_id") if not hasattr(encoder, a)]
    if missing:
        raise TextEncodingError(
            f"text encoder {type(encoder).__name__} lacks {', '.join(missing)}; expected an object "
            "with tokenize(text) -> list[int], hidden_states(ids, mask), bos_id and pad_id "
            "(e.g. TransformersGemmaEncoder)."
        )
    batch = build_token_batch(captions, encoder.tokenize, bos_id=encoder.bos_id, pad_id=encoder.pad_id)
    hidden = encoder.hidden_states(batch.input_ids, batch.attention_mask)
    expected = (len(batch.input_ids), batch.max_length)
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


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class TransformersGemmaEncoder:
    """:class:`TextEncoderLike` backed by Hugging Face ``transformers`` (optional dependency).

    ``TransformersGemmaEncoder(model_dir)`` loads a Gemma-2 directory (e.g. the
    Efficient-Large-Model/gemma-2-2b-it repackage used upstream) as upstream does:
    ``AutoModelForCausalLM(...).get_decoder()`` in bf16 on ``device``; the decoder's
    ``last_hidden_state`` is the final-norm output. ``TransformersGemmaEncoder(tokenizer=...,
    model=...)`` wraps already-built objects (left on their device/dtype unless given).

    Upstream (transformers 4.57.1) runs Gemma-2 with ``attn_implementation="sdpa"``, which
    ignores ``attn_logit_softcapping``. We reproduce that math on every transformers version:
    soft-capping is switched off on the model (in place) and ``sdpa`` is used where the
    installed transformers allows it for Gemma-2, ``eager`` otherwise (transformers 5 refuses
    sdpa for Gemma-2; without soft-capping both compute the same attention).
    """

    def __init__(
        self,
        model_dir: Optional[str] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        *,
        tokenizer=None,
        model=None,
    ):
        transformers = _import_transformers()
        torch_dtype = _resolve_dtype(dtype)
        if model_dir is not None:
            if tokenizer is not None or model is not None:
                raise PiDInputError("pass either model_dir or (tokenizer, model), not both.")
            tokenizer, model = _load(transformers, str(model_dir), torch_dtype or torch.bfloat16)
            device = device or "cpu"
        elif tokenizer is None or model is None:
            raise PiDInputError(
                "TransformersGemmaEncoder needs model_dir (a Gemma-2 folder) or both tokenizer= and model=."
            )
        elif torch_dtype is not None:
            model = model.to(torch_dtype)
        if device is not None:
            model = model.to(device)
        _disable_softcapping(model)
        model.eval().requires_grad_(False)

        if tokenizer.bos_token_id is None or tokenizer.pad_token_id is None:
            raise TextEncodingError(
                f"tokenizer has bos_token_id={tokenizer.bos_token_id}, pad_token_id="
                f"{tokenizer.pad_token_id}; the Gemma-2 tokenizer defines both (BOS 2, pad 0)."
            )
        self.tokenizer = tokenizer
        self.model = model
        self.bos_id = int(tokenizer.bos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        return out.last_hidden_state


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise TextEncodingError(
            "the Gemma-2 text encoder needs the optional 'transformers' package: "
            "pip install transformers sentencepiece"
        ) from exc
    return transformers


def _load(transformers, model_dir: str, torch_dtype: torch.dtype):
    config = transformers.AutoConfig.from_pretrained(model_dir)
    if getattr(config, "model_type", None) != "gemma2":
        raise TextEncodingError(
            f"{model_dir} holds a {getattr(config, 'model_type', 'unknown')!r} model; PiD needs "
            "Gemma-2-2B-it (model_type 'gemma2'), e.g. Efficient-Large-Model/gemma-2-2b-it."
        )
    sdpa_ok = getattr(getattr(transformers, "Gemma2PreTrainedModel", None), "_supports_sdpa", False)
    attn = "sdpa" if sdpa_ok else "eager"
    log.debug("loading Gemma-2 from %s with attn_implementation=%s, dtype=%s", model_dir, attn, torch_dtype)
    dtype_kw = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation=attn, **{dtype_kw: torch_dtype}
    )
    return tokenizer, lm.get_decoder()


def _disable_softcapping(model) -> None:
    """Turn off Gemma-2 attention-logit soft-capping, as upstream's sdpa path does."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "attn_logit_softcapping", None) is not None:
        config.attn_logit_softcapping = None
    for module in model.modules():
        if getattr(module, "attn_logit_softcapping", None) is not None:
            module.attn_logit_softcapping = None


def _resolve_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise PiDInputError(f"dtype must be one of {', '.join(_DTYPES)} or a torch.dtype; got {dtype!r}.")


def _version(text: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:2]]
    return tuple(parts + [0] * (2 - len(parts)))  # type: ignore[return-value]


def _check_captions(captions) -> list[str]:
    if isinstance(captions, str):
        raise PiDInputError(
            f"captions must be a list of strings; got a single str ({captions[:40]!r}). Wrap it in a list."
        )
    if not isinstance(captions, (list, tuple)) or not captions:
        raise PiDInputError(f"captions must be a non-empty list of strings; got {captions!r:.80}. "
                            f"Pass one prompt per latent, e.g. [\"a red fox\"] ([\"\"] for none).")
    bad = [(i, type(c).__name__) for i, c in enumerate(captions) if not isinstance(c, str)]
    if bad:
        raise PiDInputError(f"captions must all be str; got {bad[:3]} (index, type).")
    return list(captions)


def _check_token_id(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PiDInputError(f"{name} must be a non-negative int token id; got {value!r}.")
    return value


def _tokenize_checked(tokenize, text: str, bos_id: int) -> list[int]:
    ids = list(tokenize(text))
    if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
        raise TextEncodingError(
            f"tokenize() must return a list of int token ids; got {ids[:5]!r}..."
        )
    if ids and ids[0] == bos_id:
        raise TextEncodingError(
            f"tokenize() returned ids starting with BOS ({bos_id}); it must not add BOS "
            "(build_token_batch adds it). Use add_special_tokens=False / add_bos=False."
        )
    return [int(i) for i in ids]
