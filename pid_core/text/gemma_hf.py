"""Gemma-2-2B through Hugging Face ``transformers`` (an optional dependency), for the recipe in
``pid_core.text``: the encoder upstream uses (nv-tlabs/PiD @2c8814c
``pid/_src/models/pixeldit_model.py``: ``AutoModelForCausalLM(...).get_decoder()`` in bf16).
"""

from __future__ import annotations

import logging
import re
from typing import Optional, Union

import torch
from torch import Tensor

from ..errors import PiDInputError, TextEncodingError

log = logging.getLogger(__name__)

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
