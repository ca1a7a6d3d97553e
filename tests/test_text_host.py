"""nodes.text_encode without ComfyUI: the CLIP adapter on a fake CLIP, the feature cache, errors.

The real host path (ComfyUI's Gemma-2-2B vs transformers, same weights) is checked by
tools/text_equivalence.py, which runs inside the ComfyUI host venv.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest
import torch
from node_helpers import pack_module
from safetensors.torch import save_file

from pid_core.text.recipe import CHI_PREAMBLE, TEXT_DIM, TEXT_TOKENS, build_token_batch

te = pack_module("nodes.text_encode")
errors = pack_module("pid_core.errors")  # the pack's own pid_core (see node_helpers)

BOS, PAD = 2, 0


def char_ids(text: str) -> list[int]:
    return [10 + (ord(c) % 200) for c in text]


# ----------------------------------------------------------------------------- a fake host CLIP
class FakeSPiece:
    """Like comfy's SPieceTokenizer with add_bos=True: text -> {"input_ids": [BOS, ...]}."""

    def __call__(self, text):
        return {"input_ids": [BOS] + char_ids(text)}


class FakeSDTokenizer:
    def __init__(self):
        self.tokenizer = FakeSPiece()
        self.start_token = BOS
        self.pad_token = PAD
        self.end_token = None


class FakeEmbedding:
    def __init__(self):
        self.weight = torch.zeros(1)

    def __call__(self, ids, out_dtype=None):
        return ids.to(out_dtype or torch.float32)[..., None].expand(*ids.shape, 4).clone()


class FakeGemma:
    """Records its calls; hidden state channel 0 = token id, 1 = position, 2 = mask."""

    def __init__(self):
        self.model = types.SimpleNamespace(
            config=types.SimpleNamespace(hidden_size=TEXT_DIM, transformer_type="gemma2"), norm=object())
        self.embeddings = FakeEmbedding()
        self.calls = []

    def get_input_embeddings(self):
        return self.embeddings

    def __call__(self, x, attention_mask, **kwargs):
        embeds = kwargs["embeds"]
        self.calls.append(dict(kwargs, x=x, attention_mask=attention_mask.clone()))
        b, n = attention_mask.shape
        h = torch.zeros(b, n, TEXT_DIM)
        h[..., 0] = embeds[..., 0]
        h[..., 1] = torch.arange(n, dtype=torch.float32)
        h[..., 2] = attention_mask.float()
        return h, None


class FakeBranch:
    def __init__(self):
        self.transformer = FakeGemma()


class FakeCondStage(torch.nn.Module):
    def __init__(self, branch="gemma2_2b"):
        super().__init__()
        self.clip = branch
        setattr(self, branch, FakeBranch())


class FakeClip:
    def __init__(self, branch="gemma2_2b"):
        self.cond_stage_model = FakeCondStage(branch)
        self.tokenizer = types.SimpleNamespace(**{branch: FakeSDTokenizer()})
        self.patcher = types.SimpleNamespace(patches_uuid="patches-0")
        self.loads = 0

    def load_model(self):
        self.loads += 1
        return self.patcher

    @property
    def gemma(self) -> FakeGemma:
        return self.cond_stage_model.gemma2_2b.transformer


class FakeTextEncoder:
    """A pid_core.text.recipe.TextEncoderLike, as used outside ComfyUI."""

    bos_id, pad_id = BOS, PAD

    def __init__(self):
        self.batches = []

    def tokenize(self, text):
        return char_ids(text)

    def hidden_states(self, input_ids, attention_mask):
        self.batches.append(input_ids.shape[0])
        return input_ids.float()[..., None].expand(*input_ids.shape, TEXT_DIM).clone()


@pytest.fixture
def cache():
    return te.FeatureCache(capacity=4)


# ----------------------------------------------------------------------------- tokens
def test_tokenize_uses_the_clip_tokenizer_without_bos_or_prompt_parsing():
    enc = te.ComfyGemmaEncoder(FakeClip())
    assert (enc.bos_id, enc.pad_id) == (BOS, PAD)
    text = "a (cat:1.5), embedding:foo \\(x\\)"
    assert enc.tokenize(text) == char_ids(text)  # weights/embeddings syntax is plain text here
    assert enc.tokenize("") == []


def test_token_batch_through_the_clip_adapter():
    enc = te.ComfyGemmaEncoder(FakeClip())
    batch = build_token_batch(["ab", ""], enc.tokenize, bos_id=enc.bos_id, pad_id=enc.pad_id)
    n_chi = 1 + len(CHI_PREAMBLE)
    assert batch.n_chi == n_chi
    assert batch.input_ids.shape == (2, n_chi + TEXT_TOKENS - 2)
    expected = [BOS] + char_ids(CHI_PREAMBLE + "ab")
    assert batch.input_ids[0, : len(expected)].tolist() == expected
    assert set(batch.input_ids[0, len(expected):].tolist()) == {PAD}
    assert batch.attention_mask[0].sum().item() == len(expected)
    assert batch.attention_mask[1].sum().item() == n_chi  # empty caption: preamble only


# ----------------------------------------------------------------------------- the forward
def test_encode_prompt_runs_gemma_with_our_ids_mask_and_final_norm_output(cache):
    clip = FakeClip()
    feats = te.encode_prompt(clip, ["a red fox", ""], cache=cache)
    assert feats.shape == (2, TEXT_TOKENS, TEXT_DIM) and feats.dtype == torch.float32
    assert feats.device.type == "cpu"
    assert clip.loads == 1  # loaded through CLIP.load_model (ComfyUI's manager)
    (call,) = clip.gemma.calls
    assert call["x"] is None and call["intermediate_output"] is None  # outputs[0]: final norm
    assert call["final_layer_norm_intermediate"] is False and call["dtype"] is torch.float32
    batch = build_token_batch(["a red fox", ""], te.ComfyGemmaEncoder(clip).tokenize, bos_id=BOS, pad_id=PAD)
    assert torch.equal(call["attention_mask"], batch.attention_mask)
    assert call["num_tokens"] == batch.attention_mask.sum(1).tolist()
    n = batch.max_length
    positions = [0] + list(range(n - (TEXT_TOKENS - 1), n))
    assert feats[0, :, 1].tolist() == positions  # BOS + last 299
    assert feats[0, :, 0].tolist() == batch.input_ids[0, positions].float().tolist()
    assert feats[0, :, 2].tolist() == batch.attention_mask[0, positions].float().tolist()


def test_encode_prompt_accepts_a_single_string(cache):
    feats = te.encode_prompt(FakeClip(), "a red fox", cache=cache)
    assert feats.shape == (1, TEXT_TOKENS, TEXT_DIM)


def test_a_pid_core_encoder_works_without_comfyui(cache):
    enc = FakeTextEncoder()
    feats = te.encode_prompt(enc, ["x", "y"], cache=cache)
    assert feats.shape == (2, TEXT_TOKENS, TEXT_DIM) and enc.batches == [2]
    te.encode_prompt(enc, ["y"], cache=cache)
    assert enc.batches == [2]


# ----------------------------------------------------------------------------- cache
def test_cache_hit_does_not_run_the_encoder_and_is_identical(cache):
    clip = FakeClip()
    first = te.encode_prompt(clip, ["a red fox"], cache=cache)
    again = te.encode_prompt(clip, ["a red fox"], cache=cache)
    assert torch.equal(first, again)
    assert len(clip.gemma.calls) == 1 and clip.loads == 1  # no load, no forward on a hit
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_encodes_only_the_missing_captions_once(cache):
    clip = FakeClip()
    te.encode_prompt(clip, ["a"], cache=cache)
    feats = te.encode_prompt(clip, ["b", "a", "b"], cache=cache)
    assert [c["attention_mask"].shape[0] for c in clip.gemma.calls] == [1, 1]  # only "b", once
    assert torch.equal(feats[0], feats[2])
    assert torch.equal(feats[1], te.encode_prompt(clip, ["a"], cache=None)[0])


def test_cache_is_keyed_by_encoder_and_weight_patches(cache):
    clip, other = FakeClip(), FakeClip()
    te.encode_prompt(clip, ["a"], cache=cache)
    te.encode_prompt(other, ["a"], cache=cache)  # another model: miss
    assert len(other.gemma.calls) == 1
    clip.patcher.patches_uuid = "patches-1"  # e.g. a LoRA was applied to the CLIP
    te.encode_prompt(clip, ["a"], cache=cache)
    assert len(clip.gemma.calls) == 2


def test_cache_shared_by_clones_of_one_clip(cache):
    clip = FakeClip()
    clone = FakeClip()
    clone.cond_stage_model = clip.cond_stage_model  # CLIP.clone() shares the module and patches
    te.encode_prompt(clip, ["a"], cache=cache)
    te.encode_prompt(clone, ["a"], cache=cache)
    assert len(clip.gemma.calls) == 1


def test_cache_is_a_bounded_lru(cache):
    clip = FakeClip()
    for c in "abcd":
        te.encode_prompt(clip, [c], cache=cache)
    te.encode_prompt(clip, ["a"], cache=cache)  # refresh "a"
    te.encode_prompt(clip, ["e"], cache=cache)  # evicts "b", the least recently used
    assert len(cache) == 4
    calls = len(clip.gemma.calls)
    te.encode_prompt(clip, ["a"], cache=cache)
    assert len(clip.gemma.calls) == calls
    te.encode_prompt(clip, ["b"], cache=cache)
    assert len(clip.gemma.calls) == calls + 1


def test_cache_none_always_encodes():
    clip = FakeClip()
    te.encode_prompt(clip, ["a"], cache=None)
    te.encode_prompt(clip, ["a"], cache=None)
    assert len(clip.gemma.calls) == 2


def test_cached_entry_size_is_what_the_docs_say():
    assert te.FEATURE_BYTES == 300 * 2304 * 4 == 2_764_800
    assert te.FEATURE_CACHE.capacity * te.FEATURE_BYTES < 50e6


# ----------------------------------------------------------------------------- errors
def test_no_text_encoder_configured():
    with pytest.raises(errors.TextEncodingError, match="no text encoder is configured"):
        te.encode_prompt(None, ["a"])


def test_a_clip_without_gemma_is_rejected():
    with pytest.raises(errors.TextEncodingError, match="branch 'clip_l'.*not Gemma-2-2B"):
        te.encode_prompt(FakeClip(branch="clip_l"), ["a"])


def test_a_gemma_of_the_wrong_size_is_rejected():
    clip = FakeClip()
    clip.gemma.model.config.hidden_size = 2560
    with pytest.raises(errors.TextEncodingError, match="hidden size 2560"):
        te.encode_prompt(clip, ["a"])


def test_an_unknown_encoder_object_is_rejected():
    with pytest.raises(errors.TextEncodingError, match="cannot encode prompts with a int"):
        te.encode_prompt(3, ["a"])


@pytest.mark.parametrize("captions", [[], [1], None])
def test_bad_captions(captions):
    with pytest.raises(errors.PiDInputError, match="captions must be"):
        te.encode_prompt(FakeClip(), captions)


# ----------------------------------------------------------------------------- file checks
def _gemma_file(path: Path, *, layers=26, hidden=TEXT_DIM, gemma3=False, spiece=True, extra=None):
    sd = {"model.norm.weight": torch.zeros(hidden), "model.embed_tokens.weight": torch.zeros(1)}
    for i in range(layers):
        sd[f"model.layers.{i}.post_feedforward_layernorm.weight"] = torch.zeros(1)
    if gemma3:
        sd["model.layers.0.self_attn.q_norm.weight"] = torch.zeros(1)
    if spiece:
        sd["spiece_model"] = torch.zeros(4, dtype=torch.uint8)
    sd.update(extra or {})
    save_file(sd, str(path))
    return path


def test_a_complete_gemma_file_passes_the_header_check(tmp_path):
    te.check_text_encoder_file(str(_gemma_file(tmp_path / "gemma_2_2b_it_elm_bf16.safetensors")))


@pytest.mark.parametrize("kwargs, match", [
    (dict(gemma3=True), "Gemma-3"),
    (dict(hidden=2560), "hidden size 2560"),
    (dict(layers=18), "18 transformer layers"),
    (dict(spiece=False), "no embedded SentencePiece tokenizer"),
])
def test_header_check_errors(tmp_path, kwargs, match):
    path = _gemma_file(tmp_path / "te.safetensors", **kwargs)
    with pytest.raises(errors.TextEncodingError, match=match):
        te.load_text_encoder(path)


def test_a_clip_l_file_is_not_a_gemma(tmp_path):
    path = tmp_path / "clip_l.safetensors"
    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(1)}, str(path))
    with pytest.raises(errors.TextEncodingError, match="not a Gemma-2 text encoder.*text_model"):
        te.load_text_encoder(path)


def test_a_corrupt_file(tmp_path):
    path = tmp_path / "gemma.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(errors.TextEncodingError, match="cannot read gemma.safetensors as safetensors"):
        te.load_text_encoder(path)


def test_missing_file(tmp_path):
    with pytest.raises(errors.TextEncodingError, match="not found.*models/text_encoders"):
        te.load_text_encoder(tmp_path / "nope.safetensors")


def test_bad_device_option(tmp_path):
    with pytest.raises(errors.PiDInputError, match="device must be"):
        te.load_text_encoder(tmp_path / "x.safetensors", device="cuda")


def test_loading_a_file_needs_the_host(tmp_path):
    if importlib.util.find_spec("comfy") is not None:
        pytest.skip("ComfyUI is importable here")
    path = _gemma_file(tmp_path / "gemma.safetensors")
    with pytest.raises(errors.TextEncodingError, match="needs the ComfyUI host"):
        te.load_text_encoder(path)
