"""pid_core.text.recipe: the upstream Gemma-2 prompt recipe, exercised with a tiny SentencePiece model."""

import hashlib
import io
import random
import sys

import pytest
import torch

from pid_core.errors import PiDInputError, TextEncodingError
from pid_core.text.gemma_hf import TransformersGemmaEncoder
from pid_core.text.recipe import (
    CHI_PREAMBLE,
    TEXT_DIM,
    TEXT_TOKENS,
    build_token_batch,
    encode_captions,
    select_pid_positions,
)

spm = pytest.importorskip("sentencepiece")

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # pad id 0 and BOS 2 as in Gemma
WORDS = ("a cat dog red blue green small fluffy sleeping city street lamp glass bus the of and in "
         "on with near under bright dark old new tall house river tree").split()


@pytest.fixture(scope="module")
def sp():
    rng = random.Random(0)
    lines = CHI_PREAMBLE.split("\n") + [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) for _ in range(400)
    ]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=256, model_type="bpe",
        pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, character_coverage=1.0, minloglevel=2,
    )
    proc = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert (proc.pad_id(), proc.bos_id(), proc.vocab_size()) == (PAD, BOS, 256)
    return proc


def _tok(sp):
    return lambda text: sp.encode(text)  # no BOS/EOS: SentencePiece adds none by default


def _caption(n_words, seed=1):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# --- the preamble -----------------------------------------------------------------------------

def test_chi_preamble_is_the_upstream_string():
    assert len(CHI_PREAMBLE) == 1057
    assert CHI_PREAMBLE.startswith('Given a user prompt, generate an "Enhanced prompt" that provides')
    assert CHI_PREAMBLE.endswith("evaluations:\nUser Prompt: ")
    assert len(CHI_PREAMBLE.split("\n")) == 8
    # sha256 of "\n".join(_CHI_PROMPT) from nv-tlabs/PiD @ 2c8814c shared_config.py
    digest = hashlib.sha256(CHI_PREAMBLE.encode("utf-8")).hexdigest()
    assert digest == "62b9ab89eebb0ac5ee4d264bf96bf19d2b81f504bc3852500efeaf5a34d638b1"


# --- build_token_batch ------------------------------------------------------------------------

def test_lengths_padding_and_mask(sp):
    caption = "a small fluffy cat sleeping near a lamp"
    batch = build_token_batch([caption], _tok(sp), bos_id=BOS)
    n_chi = 1 + len(sp.encode(CHI_PREAMBLE))
    assert batch.n_chi == n_chi
    assert batch.max_length == n_chi + 298
    assert batch.input_ids.shape == batch.attention_mask.shape == (1, n_chi + 298)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == torch.long

    expected = [BOS] + sp.encode(CHI_PREAMBLE + caption)
    k = len(expected)
    assert k < n_chi + 298
    assert batch.input_ids[0, :k].tolist() == expected
    assert batch.input_ids[0, k:].eq(PAD).all()             # right padding with id 0
    assert batch.attention_mask[0, :k].eq(1).all()
    assert batch.attention_mask[0, k:].eq(0).all()
    assert int(batch.attention_mask.sum()) == k


def test_custom_pad_id(sp):
    batch = build_token_batch(["a cat"], _tok(sp), bos_id=BOS, pad_id=EOS)
    k = int(batch.attention_mask.sum())
    assert batch.input_ids[0, k:].eq(EOS).all()
    assert batch.input_ids[0, 0].item() == BOS


def test_empty_caption_keeps_the_preamble(sp):
    batch = build_token_batch([""], _tok(sp), bos_id=BOS)
    n_chi = batch.n_chi
    assert batch.input_ids[0, :n_chi].tolist() == [BOS] + sp.encode(CHI_PREAMBLE)
    assert int(batch.attention_mask.sum()) == n_chi     # preamble only, then padding
    assert batch.input_ids[0, n_chi:].eq(PAD).all()


def test_long_caption_is_right_truncated(sp):
    caption = _caption(1000)
    full = [BOS] + sp.encode(CHI_PREAMBLE + caption)
    batch = build_token_batch([caption], _tok(sp), bos_id=BOS)
    assert len(full) > batch.max_length
    assert batch.input_ids[0].tolist() == full[: batch.max_length]
    assert batch.attention_mask.eq(1).all()


def test_batch_rows_equal_single_caption_batches(sp):
    captions = ["a cat", "", _caption(40, seed=3), _caption(900, seed=4), "red bus near a tall house"]
    batch = build_token_batch(captions, _tok(sp), bos_id=BOS)
    assert batch.input_ids.shape == (5, batch.n_chi + 298)
    for row, caption in enumerate(captions):
        single = build_token_batch([caption], _tok(sp), bos_id=BOS)
        assert torch.equal(batch.input_ids[row], single.input_ids[0])
        assert torch.equal(batch.attention_mask[row], single.attention_mask[0])
    lengths = batch.attention_mask.sum(1).tolist()
    assert len(set(lengths)) == 5  # different captions, different real lengths
    assert lengths[1] == batch.n_chi and lengths[3] == batch.max_length


def test_tuple_of_captions_accepted(sp):
    a = build_token_batch(("a cat", "a dog"), _tok(sp), bos_id=BOS)
    b = build_token_batch(["a cat", "a dog"], _tok(sp), bos_id=BOS)
    assert torch.equal(a.input_ids, b.input_ids)


@pytest.mark.parametrize("captions, match", [
    ("a cat", r"got a single str \('a cat'\)\. Wrap it in a list"),
    ([], r"non-empty list of strings"),
    (None, r"non-empty list of strings; got None"),
    (["a cat", 3, None], r"must all be str; caption 1 is a int"),
])
def test_bad_captions(sp, captions, match):
    with pytest.raises(PiDInputError, match=match):
        build_token_batch(captions, _tok(sp), bos_id=BOS)


@pytest.mark.parametrize("kwargs, match", [
    ({"bos_id": -1}, r"bos_id must be a non-negative int token id; got -1"),
    ({"bos_id": "2"}, r"bos_id .* got '2'"),
    ({"bos_id": BOS, "pad_id": True}, r"pad_id .* got True"),
])
def test_bad_token_ids(sp, kwargs, match):
    with pytest.raises(PiDInputError, match=match):
        build_token_batch(["a cat"], _tok(sp), **kwargs)


def test_tokenize_must_not_add_bos(sp):
    with pytest.raises(TextEncodingError, match=r"starting with BOS \(2\); it must not add BOS"):
        build_token_batch(["a cat"], lambda t: sp.encode(t, add_bos=True), bos_id=BOS)


def test_tokenize_must_return_ints(sp):
    with pytest.raises(TextEncodingError, match=r"list of int token ids"):
        build_token_batch(["a cat"], lambda t: sp.encode(t, out_type=str), bos_id=BOS)
    with pytest.raises(PiDInputError, match=r"tokenize must be callable"):
        build_token_batch(["a cat"], "not a function", bos_id=BOS)


# --- selection --------------------------------------------------------------------------------

def test_select_bos_and_last_299():
    n = 380
    hidden = torch.arange(2 * n * 3, dtype=torch.float32).view(2, n, 3)
    out = select_pid_positions(hidden)
    assert out.shape == (2, TEXT_TOKENS, 3)
    assert torch.equal(out[:, 0], hidden[:, 0])
    assert torch.equal(out[:, 1:], hidden[:, n - 299:])
    idx = out[0, :, 0].long() // 3
    assert idx.tolist() == [0] + list(range(n - 299, n))


def test_select_exactly_300_is_identity():
    hidden = torch.randn(1, 300, 4)
    assert torch.equal(select_pid_positions(hidden), hidden)


@pytest.mark.parametrize("shape, match", [
    ((1, 299, 8), r"299 positions; PiD needs at least 300"),
    ((300, 8), r"3-D tensor \[B, N, D\]; got \(300, 8\)"),
])
def test_select_errors(shape, match):
    with pytest.raises(TextEncodingError, match=match):
        select_pid_positions(torch.zeros(shape))


# --- encode_captions --------------------------------------------------------------------------

class FakeEncoder:
    """Hidden state = (token id, position, mask) written into the first three of `dim` channels."""

    def __init__(self, sp, dim=TEXT_DIM, bos_id=BOS, pad_id=PAD):
        self.sp, self.dim, self.bos_id, self.pad_id = sp, dim, bos_id, pad_id
        self.calls = []

    def tokenize(self, text):
        return self.sp.encode(text)

    def hidden_states(self, input_ids, attention_mask):
        self.calls.append((input_ids.clone(), attention_mask.clone()))
        b, n = input_ids.shape
        h = torch.zeros(b, n, self.dim, dtype=torch.float64)
        h[..., 0] = input_ids.to(h.dtype)
        h[..., 1] = torch.arange(n, dtype=h.dtype)
        h[..., 2] = attention_mask.to(h.dtype)
        return h


def test_encode_captions_runs_the_recipe(sp):
    enc = FakeEncoder(sp)
    captions = ["a cat sleeping", ""]
    out = encode_captions(captions, enc)
    assert out.shape == (2, TEXT_TOKENS, TEXT_DIM) and out.dtype == torch.float32
    (ids, mask), = enc.calls
    batch = build_token_batch(captions, enc.tokenize, bos_id=BOS)
    assert torch.equal(ids, batch.input_ids) and torch.equal(mask, batch.attention_mask)
    n = batch.max_length
    assert out[:, 0, 0].eq(BOS).all() and out[:, 0, 1].eq(0).all()
    positions = out[0, 1:, 1].long()
    assert positions.tolist() == list(range(n - 299, n))       # the last 299 positions
    assert positions[0].item() == batch.n_chi - 1              # = index n_chi - 1 (PID_SPEC §6)
    assert torch.equal(out[:, 1:, 0].long(), ids[:, -299:])
    assert torch.equal(out[:, 1:, 2].long(), mask[:, -299:])   # pad states are kept


def test_encode_checks_width_and_length(sp):
    with pytest.raises(TextEncodingError, match=r"returned 32-dim hidden states; PiD needs 2304"):
        encode_captions(["a cat"], FakeEncoder(sp, dim=32))
    assert encode_captions(["a cat"], FakeEncoder(sp, dim=32), text_dim=None).shape == (1, 300, 32)

    class Short(FakeEncoder):
        def hidden_states(self, input_ids, attention_mask):
            return super().hidden_states(input_ids[:, :-1], attention_mask[:, :-1])

    with pytest.raises(TextEncodingError, match=r"shape \(1, \d+, 2304\); expected \[1, \d+, 2304\]"):
        encode_captions(["a cat"], Short(sp))


def test_encode_rejects_non_encoder():
    with pytest.raises(TextEncodingError, match=r"lacks tokenize, hidden_states, bos_id, pad_id"):
        encode_captions(["a cat"], object())


def test_transformers_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(TextEncodingError, match=r"pip install transformers sentencepiece"):
        TransformersGemmaEncoder("/nonexistent")
