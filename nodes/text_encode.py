"""Prompt -> PiD text features through the host's Gemma-2-2B text encoder (the recipe is
``pid_core.text.recipe``). Inside ComfyUI the encoder is the host's own CLIP for a Gemma-2-2B file;
``ComfyGemmaEncoder`` tokenises with the file's SentencePiece tokenizer (no prompt weighting) and
calls the Gemma transformer with the recipe's padding mask for its final-norm output. Outside
ComfyUI any ``TextEncoderLike`` works. ``FEATURE_CACHE`` keeps the last few prompts' features
(CPU float32, per encoder identity and LoRA state), so re-running a node with the same prompt does
not re-run a 2B-parameter encoder; it holds no module and no reference to the encoder.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from typing import Hashable, Optional, Sequence, Union

import torch
from torch import Tensor

from ..pid_core.errors import PiDInputError, TextEncodingError
from ..pid_core.text.gemma_hf import TransformersGemmaEncoder
from ..pid_core.text.recipe import TEXT_DIM, TEXT_TOKENS, TextEncoderLike, encode_captions
from . import host

log = logging.getLogger(__name__)

GEMMA_BRANCH = "gemma2_2b"  # attribute of the Gemma-2-2B branch in Lumina 2 / PixelDiT CLIP objects
GEMMA_LAYERS = 26
FEATURE_CACHE_SIZE = 16
FEATURE_BYTES = TEXT_TOKENS * TEXT_DIM * 4  # one cached prompt, float32

# Keys of a Gemma-2 text-encoder file as ComfyUI's loader expects them (comfy/sd.py
# detect_te_model; the same names as transformers' Gemma2ForCausalLM).
_GEMMA2_KEY = "model.layers.0.post_feedforward_layernorm.weight"
_GEMMA3_KEY = "model.layers.0.self_attn.q_norm.weight"
_NORM_KEY = "model.norm.weight"
_TOKENIZER_KEY = "spiece_model"
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


# ----------------------------------------------------------------------------- loading
def load_text_encoder(path: Union[str, os.PathLike], *, device: str = "default"):
    """Load a Gemma-2-2B text-encoder file through ComfyUI's own CLIP loading; returns the CLIP.

    Uses the ``pixeldit`` CLIP type where the host has it, else ``lumina2`` (older ComfyUI):
    both build the same Gemma-2-2B model and tokenizer, and :func:`encode_prompt` selects the
    final-norm output itself. ``device="cpu"`` keeps the encoder on the CPU (as core
    ``CLIPLoader``'s ``device`` option).

    A directory (a Hugging Face Gemma-2 folder) is loaded with
    ``pid_core.text.gemma_hf.TransformersGemmaEncoder`` on the CPU instead (scripts without ComfyUI; it
    stays outside ComfyUI's memory manager, so it never takes GPU memory).
    """
    path = os.fspath(path)
    if device not in ("default", "cpu"):
        raise PiDInputError(f"device must be 'default' or 'cpu'; got {device!r}.")
    if os.path.isdir(path):
        return TransformersGemmaEncoder(path, device="cpu")
    check_text_encoder_file(path)
    sd_module = _comfy_module("comfy.sd")
    folder_paths = _comfy_module("folder_paths")
    clip_type = getattr(sd_module.CLIPType, "PIXELDIT", None) or sd_module.CLIPType.LUMINA2
    model_options = {}
    if device == "cpu":
        model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
    log.info("loading Gemma-2-2B text encoder %s as CLIP type %s", os.path.basename(path), clip_type.name)
    clip = sd_module.load_clip(
        ckpt_paths=[path],
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        clip_type=clip_type,
        model_options=model_options,
    )
    ComfyGemmaEncoder(clip)  # fail now, not at the first prompt, if the host built something else
    return clip


def check_text_encoder_file(path: str) -> None:
    """Read a ``.safetensors`` header and raise :class:`TextEncodingError` unless it is a
    complete Gemma-2-2B text encoder with its SentencePiece tokenizer (``spiece_model``).

    Other formats are left to ComfyUI's loader (checked after loading instead).
    """
    if not os.path.isfile(path):
        raise TextEncodingError(
            f"text encoder file not found: {path}. Put gemma_2_2b_it_elm_bf16.safetensors (or an "
            "fp8-scaled variant) in ComfyUI/models/text_encoders/."
        )
    if not path.lower().endswith((".safetensors", ".sft")):
        return
    from safetensors import safe_open

    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as f:
            keys = set(f.keys())
            norm_shape = list(f.get_slice(_NORM_KEY).get_shape()) if _NORM_KEY in keys else None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise TextEncodingError(f"cannot read {name} as safetensors: {exc}. Re-download the file.") from exc

    if _GEMMA2_KEY not in keys:
        sample = ", ".join(sorted(keys)[:3]) or "no tensors"
        raise TextEncodingError(
            f"{name} is not a Gemma-2 text encoder: key {_GEMMA2_KEY!r} is missing (found e.g. "
            f"{sample}). PiD needs Gemma-2-2B-it, e.g. Comfy-Org's gemma_2_2b_it_elm_bf16.safetensors."
        )
    if _GEMMA3_KEY in keys:
        raise TextEncodingError(
            f"{name} is a Gemma-3 text encoder (it has {_GEMMA3_KEY!r}); PiD was trained on "
            "Gemma-2-2B-it features. Load gemma_2_2b_it_elm_bf16.safetensors instead."
        )
    if norm_shape != [TEXT_DIM]:
        raise TextEncodingError(
            f"{name} has hidden size {norm_shape[0] if norm_shape else 'unknown'} ({_NORM_KEY} "
            f"shape {norm_shape}); PiD needs Gemma-2-2B ({TEXT_DIM}). Load a Gemma-2-2B-it file."
        )
    layers = {int(m.group(1)) for k in keys if (m := _LAYER_RE.match(k))}
    if layers != set(range(GEMMA_LAYERS)):
        raise TextEncodingError(
            f"{name} has {len(layers)} transformer layers (indices {min(layers)}..{max(layers)}); "
            f"Gemma-2-2B has {GEMMA_LAYERS}. The file is incomplete or another model."
        )
    if _TOKENIZER_KEY not in keys:
        raise TextEncodingError(
            f"{name} has no embedded SentencePiece tokenizer ({_TOKENIZER_KEY!r}), which ComfyUI "
            "needs to tokenise prompts. Use Comfy-Org's gemma_2_2b_it_elm_*.safetensors, which "
            "carry it (raw Hugging Face shards do not)."
        )


# ----------------------------------------------------------------------------- the host encoder
class ComfyGemmaEncoder:
    """``pid_core.text.recipe.TextEncoderLike`` over a ComfyUI CLIP object holding Gemma-2-2B."""

    def __init__(self, clip):
        model = getattr(getattr(clip, "cond_stage_model", None), GEMMA_BRANCH, None)
        tokenizer = getattr(getattr(clip, "tokenizer", None), GEMMA_BRANCH, None)
        if model is None or tokenizer is None:
            raise TextEncodingError(
                f"the connected CLIP holds {_describe_clip(clip)}, not Gemma-2-2B; PiD needs the "
                "Gemma-2-2B-it text encoder (gemma_2_2b_it_elm_*.safetensors, CLIP type lumina2 "
                "or pixeldit), or use PiD's own text-encoder loader."
            )
        transformer = model.transformer
        config = getattr(getattr(transformer, "model", None), "config", None)
        hidden = getattr(config, "hidden_size", None)
        if hidden != TEXT_DIM or getattr(config, "transformer_type", "gemma2") != "gemma2":
            raise TextEncodingError(
                f"the CLIP's {GEMMA_BRANCH} model is {getattr(config, 'transformer_type', '?')} with "
                f"hidden size {hidden}; PiD needs Gemma-2-2B ({TEXT_DIM})."
            )
        if getattr(transformer.model, "norm", None) is None:
            raise TextEncodingError("this ComfyUI's Gemma-2 model has no final norm; PiD needs its output.")
        self.clip = clip
        self._model = model
        self._spiece = tokenizer.tokenizer  # SPieceTokenizer: text -> {"input_ids": [BOS, ...]}
        self.bos_id = int(tokenizer.start_token)
        self.pad_id = int(tokenizer.pad_token)
        self._end_id = getattr(tokenizer, "end_token", None)

    def tokenize(self, text: str) -> list[int]:
        """The file's SentencePiece ids for ``text``, without BOS/EOS and without prompt parsing."""
        ids = [int(i) for i in self._spiece(text)["input_ids"]]
        if ids[:1] == [self.bos_id]:
            ids = ids[1:]
        if self._end_id is not None and ids[-1:] == [int(self._end_id)]:
            ids = ids[:-1]
        return ids

    @torch.no_grad()
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final-norm Gemma states ``[B, N, 2304]`` float32 for our ids and mask."""
        host.check_interrupted()
        self.clip.load_model()  # ComfyUI's manager puts it on the text-encoder device
        transformer = self._model.transformer
        embeddings = transformer.get_input_embeddings()
        device = getattr(self._model, "execution_device", None) or embeddings.weight.device
        ids = input_ids.to(device=device, dtype=torch.long)
        mask = attention_mask.to(device=device, dtype=torch.long)
        # As comfy.sd1_clip.SDClipModel.forward, but with our mask and the final-norm output.
        embeds = embeddings(ids, out_dtype=torch.float32)
        outputs = transformer(
            None, mask, embeds=embeds, num_tokens=mask.sum(dim=1).tolist(),
            intermediate_output=None, final_layer_norm_intermediate=False, dtype=torch.float32,
        )
        return outputs[0].float()


def as_text_encoder(encoder) -> TextEncoderLike:
    """A ComfyUI CLIP -> :class:`ComfyGemmaEncoder`; a ``TextEncoderLike`` is returned as is."""
    if encoder is None:
        raise TextEncodingError(
            "no text encoder is configured: PiD needs Gemma-2-2B-it features of the prompt. "
            "Select gemma_2_2b_it_elm_bf16.safetensors (models/text_encoders) in the PiD text "
            "encoder loader, or connect a CLIP loaded with type lumina2/pixeldit."
        )
    if hasattr(encoder, "cond_stage_model") and hasattr(encoder, "tokenizer"):
        return ComfyGemmaEncoder(encoder)
    if isinstance(encoder, (ComfyGemmaEncoder, TextEncoderLike)):
        return encoder
    raise TextEncodingError(
        f"cannot encode prompts with a {type(encoder).__name__}; expected a ComfyUI CLIP holding "
        "Gemma-2-2B or a pid_core.text.recipe encoder (tokenize, hidden_states, bos_id, pad_id)."
    )


# ----------------------------------------------------------------------------- cache + entry point
class FeatureCache:
    """Bounded LRU of CPU feature tensors ``[300, 2304]`` keyed by (encoder, patches, caption)."""

    def __init__(self, capacity: int = FEATURE_CACHE_SIZE):
        self.capacity = int(capacity)
        self._items: "OrderedDict[Hashable, Tensor]" = OrderedDict()
        self._tokens: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def encoder_key(self, encoder) -> Optional[Hashable]:
        """(identity token, patch state) of an encoder, or None if it cannot be identified.

        The token is bound weakly to the module holding the weights (a CLIP's
        ``cond_stage_model``, shared by its clones), so a new model never inherits an old id;
        the patch state is the ``ModelPatcher``'s ``patches_uuid`` (changes with LoRAs).
        """
        owner = getattr(encoder, "cond_stage_model", encoder)
        patches = getattr(getattr(encoder, "patcher", None), "patches_uuid", None)
        with self._lock:
            try:
                token = self._tokens.get(owner)
                if token is None:
                    token = self._tokens[owner] = next(self._counter)
            except TypeError:  # not weak-referenceable: do not cache rather than risk id() reuse
                return None
        return (token, patches)

    def get(self, key: Hashable) -> Optional[Tensor]:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Tensor) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


FEATURE_CACHE = FeatureCache()


def encode_prompt(encoder, captions: Union[str, Sequence[str]], *,
                  cache: Optional[FeatureCache] = FEATURE_CACHE) -> Tensor:
    """Captions -> PiD text features ``[B, 300, 2304]`` float32 on ComfyUI's intermediate device.

    ``encoder``: a ComfyUI CLIP holding Gemma-2-2B (from :func:`load_text_encoder` or a core
    loader) or any ``pid_core.text.recipe.TextEncoderLike``. ``captions``: one string or a list.
    Cached captions are not re-encoded; ``cache=None`` always runs the encoder.
    """
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, (list, tuple)) or set(map(type, captions)) != {str}:
        raise PiDInputError(
            f"captions must be a string or a non-empty list of strings; got {captions!r:.80}.")
    text_encoder = as_text_encoder(encoder)
    enc_key = cache.encoder_key(encoder) if cache is not None else None

    found: dict[str, Tensor] = {}
    todo = []
    for caption in dict.fromkeys(captions):
        hit = None if enc_key is None else cache.get((enc_key, caption))
        if hit is None:
            todo.append(caption)
        else:
            found[caption] = hit
    if todo:
        log.debug("encoding %d prompt(s) with Gemma-2-2B (%d cached)", len(todo), len(found))
        features = encode_captions(todo, text_encoder).to(device="cpu", dtype=torch.float32)
        for caption, feat in zip(todo, features):
            feat = feat.clone()  # own storage: do not keep the whole batch alive
            found[caption] = feat
            if enc_key is not None:
                cache.put((enc_key, caption), feat)
    out = torch.stack(list(map(found.__getitem__, captions)))
    return out.to(host.intermediate_device())


# ----------------------------------------------------------------------------- helpers
def _comfy_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise TextEncodingError(
            f"loading a text-encoder file this way needs the ComfyUI host ({name}); outside "
            "ComfyUI use pid_core.text.gemma_hf.TransformersGemmaEncoder(model_dir)."
        ) from exc


def _describe_clip(clip) -> str:
    model = getattr(clip, "cond_stage_model", None)
    if model is None:
        return f"a {type(clip).__name__}"
    branch = getattr(model, "clip", None)
    return f"{type(model).__name__}" + (f" (branch {branch!r})" if branch else "")
