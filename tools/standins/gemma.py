"""The random full-size Gemma-2-2B-it stand-in (weights, SentencePiece tokenizer, transformers dir).

Comfy-Org's ``gemma_2_2b_it_elm_*`` layout: keys ``model.*`` plus the serialised SentencePiece
model under ``spiece_model``. Used by tools/text_equivalence.py and tools/host_fixtures.py.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

import torch

from standins.weights import Spec, write_random

GEMMA = dict(vocab=256000, hidden=2304, layers=26, heads=8, kv_heads=4, head_dim=256, mlp=9216)


def log(msg: str) -> None:
    print(f"[gemma stand-in {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_tokenizer(work: Path, lines: list) -> Path:
    """Train the SentencePiece model once (Gemma's settings, 8000 pieces) on `lines` plus the
    markdown files of the installed packages."""
    import sentencepiece as spm

    work.mkdir(parents=True, exist_ok=True)
    model = work / "tokenizer.model"
    if not model.exists():
        corpus = list(lines)
        site = Path(torch.__file__).parents[1]
        for f in sorted(glob.glob(str(site / "**" / "*.md"), recursive=True))[:800]:
            try:
                corpus.extend(Path(f).read_text(encoding="utf-8").splitlines())
            except (UnicodeDecodeError, OSError):
                continue
        corpus = [line for line in corpus if line.strip()]
        log(f"training SentencePiece BPE on {len(corpus)} lines")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus), model_prefix=str(work / "tokenizer"), vocab_size=8000,
            model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
            remove_extra_whitespaces=False, normalization_rule_name="identity",
            allow_whitespace_only_pieces=True, character_coverage=0.9995, hard_vocab_limit=False,
            pad_id=0, eos_id=1, bos_id=2, unk_id=3,
            pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
            max_sentence_length=100000, minloglevel=2,
        )
    return model


def gemma_specs() -> dict:
    """Key -> Spec of a Gemma-2-2B file as Comfy-Org ships it (``model.*``), bf16."""
    L, D, H, K, hd, M = (GEMMA[k] for k in ("layers", "hidden", "heads", "kv_heads", "head_dim", "mlp"))
    bf16 = torch.bfloat16

    def w(*shape, std=0.02):
        return Spec(shape, bf16, fill="normal", gain=std)

    sd = {"model.embed_tokens.weight": w(GEMMA["vocab"], D, std=1.0 / D ** 0.5 * 1.5),
          "model.norm.weight": w(D, std=0.2)}
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = w(H * hd, D)
        sd[p + "self_attn.k_proj.weight"] = w(K * hd, D)
        sd[p + "self_attn.v_proj.weight"] = w(K * hd, D)
        sd[p + "self_attn.o_proj.weight"] = w(D, H * hd)
        sd[p + "mlp.gate_proj.weight"] = w(M, D)
        sd[p + "mlp.up_proj.weight"] = w(M, D)
        sd[p + "mlp.down_proj.weight"] = w(D, M)
        for n in ("input_layernorm", "post_attention_layernorm",
                  "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            sd[p + n + ".weight"] = w(D, std=0.2)
    return sd


def prepare_weights(work: Path, seed: int) -> Path:
    """ONE full-size random Gemma-2-2B with the tokenizer under ``spiece_model`` (streamed to disk)."""
    weights = work / "gemma_2_2b_random_bf16.safetensors"
    if not weights.exists():
        spm_bytes = (work / "tokenizer.model").read_bytes()
        specs = gemma_specs()
        log(f"writing {weights.name}: {sum(s.nbytes() for s in specs.values()) / 2e9:.3f} B parameters, bf16")
        write_random(weights, specs, seed=seed, metadata={"format": "pt"},
                     extra={"spiece_model": torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)})
    return weights


def hf_tokenizer(spm_model: Path, probe: str):
    """A transformers fast tokenizer for the SentencePiece model. transformers < 5 converts the
    model itself (needs protobuf); transformers 5 no longer does (``GemmaTokenizer(vocab_file=...)``
    silently gives a 5-token vocabulary), so there the BPE vocabulary and merges are read from the
    model with sentencepiece and handed over, and BOS is added by a template post-processor as in
    Gemma's own tokenizer.json."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return transformers.GemmaTokenizerFast(vocab_file=str(spm_model))
    import sentencepiece as spm
    from tokenizers import processors
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    ids = range(sp.get_piece_size())
    vocab = {sp.id_to_piece(i): i for i in ids}
    special = [sp.id_to_piece(i) for i in ids if sp.is_control(i) or sp.is_unknown(i)]
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in ids
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))}
    tok = transformers.GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores, skip_tokens=special))
    bos = sp.id_to_piece(sp.bos_id())
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, sp.bos_id())])
    if tok(probe).input_ids != [sp.bos_id()] + sp.encode(probe):
        raise SystemExit("the converted tokenizer does not reproduce SentencePiece's ids")
    return tok


def prepare_hf(work: Path, weights: Path, probe: str) -> None:
    import transformers

    hf_dir = work / "hf"
    stamp = hf_dir / f"tokenizer.transformers-{transformers.__version__}"
    if not stamp.exists():
        hf_dir.mkdir(exist_ok=True)
        config = transformers.Gemma2Config(
            vocab_size=GEMMA["vocab"], hidden_size=GEMMA["hidden"], num_hidden_layers=GEMMA["layers"],
            num_attention_heads=GEMMA["heads"], num_key_value_heads=GEMMA["kv_heads"],
            head_dim=GEMMA["head_dim"], intermediate_size=GEMMA["mlp"], torch_dtype="bfloat16",
        )
        config.save_pretrained(hf_dir)
        link = hf_dir / "model.safetensors"
        if not link.exists():
            link.symlink_to(weights)  # transformers reports 'spiece_model' as an unused key
        tok = hf_tokenizer(work / "tokenizer.model", probe)
        tok.padding_side = "right"
        tok.save_pretrained(hf_dir)
        stamp.write_text("tokenizer written by this transformers version\n")
