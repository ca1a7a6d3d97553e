"""TransformersGemmaEncoder on a tiny random Gemma-2: equals upstream's recipe computed by hand."""

import random

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from pid_core.errors import PiDInputError, TextEncodingError  # noqa: E402
from pid_core.text.gemma_hf import TransformersGemmaEncoder  # noqa: E402
from pid_core.text.recipe import CHI_PREAMBLE, encode_captions  # noqa: E402

PAD, EOS, BOS, UNK = 0, 1, 2, 3  # Gemma's special-token ids
WORDS = "a cat dog red blue small fluffy sleeping city street lamp glass bus near tall house".split()
CAPTIONS = ["a small fluffy cat sleeping", "", " ".join(random.Random(0).choice(WORDS) for _ in range(700))]


@pytest.fixture(scope="module")
def tokenizer():
    """A real HF fast tokenizer (tiny BPE) that adds BOS and no EOS, like Gemma's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = random.Random(1)
    lines = CHI_PREAMBLE.split("\n") + [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    t = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="right")
    assert (t.bos_token_id, t.pad_token_id) == (BOS, PAD)
    return t


def _config(softcap=None):
    return transformers.Gemma2Config(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=1024, sliding_window=4096, attn_logit_softcapping=softcap,
        final_logit_softcapping=None, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
    )


def _tiny_gemma(softcap=None, seed=0):
    torch.manual_seed(seed)
    model = transformers.Gemma2Model(_config(softcap)).eval()
    with torch.no_grad():  # random, non-trivial weights everywhere (norm weights included)
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def _upstream_reference(tokenizer, model, captions):
    """nv-tlabs/PiD PixelDiTModel._encode_text_raw, written out with the HF tokenizer."""
    n_chi = len(tokenizer.encode(CHI_PREAMBLE))  # includes BOS
    tokens = tokenizer([CHI_PREAMBLE + c for c in captions], max_length=n_chi + 300 - 2,
                       padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    select = [0] + list(range(-299, 0))
    return hidden[:, select].float(), tokens


def test_encoder_matches_upstream_recipe(tokenizer):
    model = _tiny_gemma()
    ref, tokens = _upstream_reference(tokenizer, model, CAPTIONS)
    enc = TransformersGemmaEncoder(tokenizer=tokenizer, model=model)
    assert (enc.bos_id, enc.pad_id) == (BOS, PAD)
    out = encode_captions(CAPTIONS, enc, text_dim=32)
    assert out.shape == (3, 300, 32) and out.dtype == torch.float32
    assert tokens.attention_mask[2].all() and not tokens.attention_mask[1].all()  # truncated / padded rows
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out[0].std() > 0.1  # not a degenerate model


def test_full_width_check_still_applies(tokenizer):
    enc = TransformersGemmaEncoder(tokenizer=tokenizer, model=_tiny_gemma())
    with pytest.raises(TextEncodingError, match=r"32-dim hidden states; PiD needs 2304"):
        encode_captions(["a cat"], enc)


def test_softcapping_is_disabled_like_upstream_sdpa(tokenizer):
    plain = _tiny_gemma(softcap=None)
    capped = _tiny_gemma(softcap=0.5)
    capped.load_state_dict(plain.state_dict())
    capped_ref, _ = _upstream_reference(tokenizer, capped, CAPTIONS[:1])
    plain_ref, _ = _upstream_reference(tokenizer, plain, CAPTIONS[:1])
    assert not torch.allclose(capped_ref, plain_ref, atol=1e-3)  # the cap matters at 0.5

    enc = TransformersGemmaEncoder(tokenizer=tokenizer, model=capped)
    assert capped.config.attn_logit_softcapping is None
    out = encode_captions(CAPTIONS[:1], enc, text_dim=None)
    torch.testing.assert_close(out, plain_ref, rtol=1e-6, atol=1e-6)


def test_load_from_model_dir(tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = transformers.Gemma2ForCausalLM(_config(softcap=50.0)).eval()
    lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    enc = TransformersGemmaEncoder(tmp_path, device="cpu", dtype="fp32")
    assert next(enc.model.parameters()).dtype == torch.float32
    assert enc.model.config.attn_logit_softcapping is None
    reference_model = lm.get_decoder()
    for module in reference_model.modules():  # upstream's sdpa path applies no soft-capping
        if hasattr(module, "attn_logit_softcapping"):
            module.attn_logit_softcapping = None
    ref, _ = _upstream_reference(tokenizer, reference_model, CAPTIONS)
    torch.testing.assert_close(encode_captions(CAPTIONS, enc, text_dim=None), ref, rtol=1e-5, atol=1e-5)

    bf16 = TransformersGemmaEncoder(tmp_path)  # default dtype bf16, as upstream
    assert next(bf16.model.parameters()).dtype == torch.bfloat16


def test_rejects_non_gemma2_dir(tmp_path):
    transformers.LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                             num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(TextEncodingError, match=r"'llama' model; PiD needs Gemma-2-2B-it"):
        TransformersGemmaEncoder(tmp_path)


def test_constructor_argument_errors(tokenizer):
    with pytest.raises(PiDInputError, match=r"needs model_dir .* or both tokenizer= and model="):
        TransformersGemmaEncoder(tokenizer=tokenizer)
    with pytest.raises(PiDInputError, match=r"either model_dir or \(tokenizer, model\)"):
        TransformersGemmaEncoder("/x", tokenizer=tokenizer, model=_tiny_gemma())
    with pytest.raises(PiDInputError, match=r"dtype must be one of bf16, fp16, fp32"):
        TransformersGemmaEncoder(tokenizer=tokenizer, model=_tiny_gemma(), dtype="int8")
