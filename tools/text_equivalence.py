"""Equivalence check: PiD prompt features through the ComfyUI host vs through transformers.

Issue 6 / PID_SPEC §6. The real Gemma-2-2B-it weights and tokenizer are not available offline,
so exactness is shown mechanically: ONE full-size Gemma-2-2B weights file with random values
(hidden 2304, 26 layers, 8 heads / 4 KV heads, head_dim 256, MLP 9216, vocab 256000, bf16)
and ONE SentencePiece tokenizer (trained here with Gemma's settings: BPE, byte fallback,
split digits, no dummy prefix, identity normalisation, ids pad 0 / eos 1 / bos 2 / unk 3),
stored the way Comfy-Org's ``gemma_2_2b_it_elm_*`` files are (keys ``model.*`` plus the
serialised tokenizer under ``spiece_model``), are encoded

  host      nodes.text_encode.load_text_encoder + encode_prompt inside the real ComfyUI
            (this snapshot has no ``pixeldit`` CLIP type: the Lumina-2 loading path);
  pixeldit  the same CLIP driven the way ComfyUI's ``pixeldit`` type drives it (its
            SDClipModel switched to layer "last", host mask rule, our padded ids): an emulation,
            since the real PixelDiTGemma2TE class is absent from this snapshot;
  hf_fp32   pid_core.text.TransformersGemmaEncoder on the same file and tokenizer, fp32;
  hf_bf16   the same in bf16, i.e. upstream's own precision.

Token ids must be identical on every path, and equal to upstream's own tokenizer call
(``tok(chi + caption, max_length=n_chi + 298, padding="max_length", truncation=True)``).

Run (≈6 GB of disk in the work dir, ≈12 GB RAM peak, ~10 min on 2 CPU cores)::

    H=~/.cache/comfy_host
    PYTHONPATH=$H/ComfyUI:/tmp/pid_text_equiv/pydeps $H/venv/bin/python tools/text_equivalence.py all

``/tmp/pid_text_equiv/pydeps`` holds ``protobuf`` (``pip install --target ... 'protobuf<6'``),
needed once by ``prepare`` to convert the SentencePiece model to a transformers fast tokenizer.
Stages: ``prepare`` (tokenizer + weights), ``host``, ``hf`` (``--dtype fp32|bf16``), ``fp8`` (the
same weights re-saved fp8-scaled, through the host), ``compare``; ``all`` runs them, each in its
own process so the 5 GB models are not held twice; ``compare`` writes ``report.json``.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_pid_tool"  # the pack imported under a package name, as ComfyUI does

PROMPTS = [
    "A small red fox sitting in fresh snow at sunrise, photorealistic, 85mm lens, shallow depth of field.",
    "",
    "Ein Café in Paris — 東京の夜景 🌃, two  spaces,\ttab and\nnewline, digits 1234567, "
    "(weights:1.3) embedding:x",
    " ".join(["A sprawling medieval harbour town with timber houses, stone bridges, fishing boats, "
              "gulls, market stalls, lanterns and a lighthouse on a cliff under a stormy sky."] * 12),
]

GEMMA = dict(vocab=256000, hidden=2304, layers=26, heads=8, kv_heads=4, head_dim=256, mlp=9216)


def log(msg: str) -> None:
    print(f"[text_equivalence {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def import_pack(module: str):
    """Import ``ROOT/<module>`` with the pack as a package (relative imports work), without
    running the pack's root ``__init__`` (which registers nodes)."""
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(ROOT)]
        sys.modules[PACKAGE] = pkg
        nodes = types.ModuleType(f"{PACKAGE}.nodes")
        nodes.__path__ = [str(ROOT / "nodes")]
        sys.modules[f"{PACKAGE}.nodes"] = nodes
    return importlib.import_module(f"{PACKAGE}.{module}")


# ----------------------------------------------------------------------------- prepare
def prepare(work: Path, seed: int) -> None:
    import sentencepiece as spm
    from safetensors.torch import save_file

    text = import_pack("pid_core.text")
    work.mkdir(parents=True, exist_ok=True)
    spm_prefix = work / "tokenizer"
    if not (work / "tokenizer.model").exists():
        corpus = [text.CHI_PREAMBLE] + PROMPTS
        site = Path(torch.__file__).parents[1]
        for f in sorted(glob.glob(str(site / "**" / "*.md"), recursive=True))[:800]:
            try:
                corpus.extend(Path(f).read_text(encoding="utf-8").splitlines())
            except (UnicodeDecodeError, OSError):
                continue
        corpus = [line for line in corpus if line.strip()]
        log(f"training SentencePiece BPE on {len(corpus)} lines")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus), model_prefix=str(spm_prefix), vocab_size=8000,
            model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
            remove_extra_whitespaces=False, normalization_rule_name="identity",
            allow_whitespace_only_pieces=True, character_coverage=0.9995, hard_vocab_limit=False,
            pad_id=0, eos_id=1, bos_id=2, unk_id=3,
            pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
            max_sentence_length=100000, minloglevel=2,
        )
    spm_bytes = (work / "tokenizer.model").read_bytes()

    weights = work / "gemma_2_2b_random_bf16.safetensors"
    if not weights.exists():
        g = torch.Generator().manual_seed(seed)
        L, D, H, K, hd, M = (GEMMA[k] for k in ("layers", "hidden", "heads", "kv_heads", "head_dim", "mlp"))

        def w(*shape, std=0.02):
            return (torch.randn(*shape, generator=g) * std).to(torch.bfloat16)

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
        sd["spiece_model"] = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
        n = sum(v.numel() for k, v in sd.items() if k != "spiece_model")
        log(f"writing {weights.name}: {n / 1e9:.3f} B parameters, bf16")
        save_file(sd, str(weights), metadata={"format": "pt"})
        del sd

    hf_dir = work / "hf"
    if not (hf_dir / "tokenizer.json").exists():
        import transformers

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
        tok = transformers.GemmaTokenizerFast(vocab_file=str(work / "tokenizer.model"))
        tok.padding_side = "right"
        tok.save_pretrained(hf_dir)
    log(f"prepared {work}")


# ----------------------------------------------------------------------------- host (ComfyUI)
def run_host(work: Path) -> None:
    from safetensors.torch import save_file

    if not torch.cuda.is_available():
        import comfy.cli_args  # ComfyUI picks its device at import: tell it there is no GPU

        comfy.cli_args.args.cpu = True
    import comfy.sd

    te = import_pack("nodes.text_encode")
    text = import_pack("pid_core.text")
    weights = work / "gemma_2_2b_random_bf16.safetensors"
    log(f"host: ComfyUI at {Path(comfy.sd.__file__).parents[1]}, "
        f"pixeldit CLIP type present: {hasattr(comfy.sd.CLIPType, 'PIXELDIT')}")
    t0 = time.time()
    clip = te.load_text_encoder(weights)
    log(f"host: loaded {type(clip.cond_stage_model).__name__} in {time.time() - t0:.1f}s; "
        f"default layer of the Lumina-2 branch: {clip.cond_stage_model.gemma2_2b.layer}/"
        f"{clip.cond_stage_model.gemma2_2b.layer_idx}")
    encoder = te.ComfyGemmaEncoder(clip)
    batch = text.build_token_batch(PROMPTS, encoder.tokenize, bos_id=encoder.bos_id, pad_id=encoder.pad_id)

    t0 = time.time()
    feats = te.encode_prompt(clip, PROMPTS)
    t_enc = time.time() - t0
    t0 = time.time()
    again = te.encode_prompt(clip, PROMPTS)
    t_hit = time.time() - t0
    assert torch.equal(feats, again), "cache hit differs from the fresh encode"
    log(f"host: encoded {feats.shape} in {t_enc:.1f}s; cached call {t_hit * 1000:.1f} ms "
        f"(hits {te.FEATURE_CACHE.hits}, misses {te.FEATURE_CACHE.misses})")

    # The pixeldit type's own forward: SDClipModel with layer "last" and its mask rule.
    branch = clip.cond_stage_model.gemma2_2b
    branch.set_clip_options({"layer": None})
    assert branch.layer == "last"
    tokens = {"gemma2_2b": [[(int(t), 1.0) for t in row] for row in batch.input_ids.tolist()]}
    t0 = time.time()
    clip.load_model()
    cond = clip.cond_stage_model.encode_token_weights(tokens)
    branch.reset_clip_options()
    pix = text.select_pid_positions(cond[0].reshape(len(PROMPTS), -1, cond[0].shape[-1]).float())
    pix_mask = cond[2]["attention_mask"].reshape(len(PROMPTS), -1).cpu()
    assert torch.equal(pix_mask, batch.attention_mask), "host mask rule differs from our mask"
    log(f"host: pixeldit-style forward in {time.time() - t0:.1f}s")

    save_file({"features": feats.contiguous(), "pixeldit_features": pix.contiguous(),
               "input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
              str(work / "host.safetensors"),
              metadata={"n_chi": str(batch.n_chi), "encode_s": f"{t_enc:.1f}",
                        "hit_ms": f"{t_hit * 1000:.1f}"})


def run_host_fp8(work: Path) -> None:
    """The same weights as an fp8-scaled file (Comfy-Org's ``*_fp8_scaled`` layout: Linear weights
    float8_e4m3fn with a per-tensor ``scale_weight``, a ``scaled_fp8`` marker, embeddings and
    norms bf16): shows the loader takes it; the difference to bf16 is fp8 quantisation."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = work / "gemma_2_2b_random_bf16.safetensors"
    dst = work / "gemma_2_2b_random_fp8_scaled.safetensors"
    if not dst.exists():
        out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
        with safe_open(str(src), "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                if k.startswith("model.layers.") and k.endswith("_proj.weight"):
                    scale = t.float().abs().max() / 448.0
                    out[k] = (t.float() / scale).to(torch.float8_e4m3fn)
                    out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
                else:
                    out[k] = t
        log(f"writing {dst.name}")
        save_file(out, str(dst), metadata={"format": "pt"})
        del out
    if not torch.cuda.is_available():
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    te = import_pack("nodes.text_encode")
    clip = te.load_text_encoder(dst)
    t0 = time.time()
    feats = te.encode_prompt(clip, PROMPTS)
    log(f"host fp8: encoded {tuple(feats.shape)} in {time.time() - t0:.1f}s")
    save_file({"features": feats.contiguous()}, str(work / "host_fp8.safetensors"))


# ----------------------------------------------------------------------------- transformers
def run_hf(work: Path, dtype: str, comfy_norm: bool = False) -> None:
    """``comfy_norm``: diagnostic. ComfyUI's Gemma RMSNorm adds 1 to the weight in the weight's
    dtype (``bf16(1 + w)``, comfy/text_encoders/llama.py RMSNorm) where transformers computes
    ``1 + float(w)``; storing ``float(bf16(1 + w)) - 1`` in the fp32 model reproduces ComfyUI's
    rounding, so what remains of the host/transformers difference is kernel order."""
    from safetensors.torch import save_file

    text = import_pack("pid_core.text")
    t0 = time.time()
    enc = text.TransformersGemmaEncoder(work / "hf", device="cpu", dtype=dtype)
    if comfy_norm:
        for name, module in enc.model.named_modules():
            if type(module).__name__.endswith("RMSNorm"):
                w = module.weight.data
                module.weight.data = (w.to(torch.bfloat16) + 1.0).float() - 1.0
    attn = getattr(enc.model.config, "_attn_implementation", "?")
    log(f"hf[{dtype}]: transformers loaded in {time.time() - t0:.1f}s (attn {attn}, "
        f"softcapping {enc.model.config.attn_logit_softcapping})")
    batch = text.build_token_batch(PROMPTS, enc.tokenize, bos_id=enc.bos_id, pad_id=enc.pad_id)
    t0 = time.time()
    feats = text.encode_captions(PROMPTS, enc)
    log(f"hf[{dtype}]: encoded {tuple(feats.shape)} in {time.time() - t0:.1f}s")
    save_file({"features": feats.contiguous(), "input_ids": batch.input_ids,
               "attention_mask": batch.attention_mask},
              str(work / f"hf_{dtype}{'_comfynorm' if comfy_norm else ''}.safetensors"),
              metadata={"n_chi": str(batch.n_chi), "attn": str(attn)})


# ----------------------------------------------------------------------------- compare
def compare(work: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    host = load_file(str(work / "host.safetensors"))
    hf32 = load_file(str(work / "hf_fp32.safetensors"))
    hf16 = load_file(str(work / "hf_bf16.safetensors"))
    cn_file = work / "hf_fp32_comfynorm.safetensors"
    hfcn = load_file(str(cn_file)) if cn_file.exists() else None
    fp8_file = work / "host_fp8.safetensors"
    fp8 = load_file(str(fp8_file)) if fp8_file.exists() else None
    with safe_open(str(work / "host.safetensors"), "pt") as f:
        meta = f.metadata()

    for name, other in (("hf_fp32", hf32), ("hf_bf16", hf16)):
        for k in ("input_ids", "attention_mask"):
            assert torch.equal(host[k], other[k]), f"{k} differ between host and {name}"
    # Upstream's own tokenizer call (PID_SPEC §6: right padding, BOS, max_length, truncation).
    import transformers

    text = import_pack("pid_core.text")
    tok = transformers.AutoTokenizer.from_pretrained(str(work / "hf"), padding_side="right")
    n_chi = len(tok(text.CHI_PREAMBLE).input_ids)
    up = tok([text.CHI_PREAMBLE + c for c in PROMPTS], max_length=n_chi + 298, padding="max_length",
             truncation=True, return_tensors="pt")
    assert n_chi == int(meta["n_chi"]), f"n_chi {meta['n_chi']} vs upstream's {n_chi}"
    assert torch.equal(host["input_ids"], up.input_ids), "ids differ from upstream's tokenizer call"
    assert torch.equal(host["attention_mask"], up.attention_mask), "mask differs from upstream's"
    lengths = host["attention_mask"].sum(1).tolist()

    def stats(a, b):
        d = (a - b).abs()
        return {"max_abs": d.max().item(), "mean_abs": d.mean().item(),
                "rel_rms": ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item(),
                "max_abs_over_max_ref": (d.max() / b.abs().max()).item()}

    ref = hf32["features"]
    report = {
        "prompts": len(PROMPTS), "n_chi": int(meta["n_chi"]), "sequence_length": host["input_ids"].shape[1],
        "real_tokens_per_prompt": lengths, "tokens_identical": True,
        "feature_shape": list(host["features"].shape),
        "reference_abs_max": ref.abs().max().item(), "reference_rms": ref.pow(2).mean().sqrt().item(),
        "host_vs_hf_fp32": stats(host["features"], ref),
        "pixeldit_style_vs_host": stats(host["pixeldit_features"], host["features"]),
        "pixeldit_style_vs_hf_fp32": stats(host["pixeldit_features"], ref),
        "host_vs_hf_fp32_with_comfy_norm_rounding":
            stats(host["features"], hfcn["features"]) if hfcn else None,
        "host_vs_hf_bf16": stats(host["features"], hf16["features"]),
        "hf_bf16_vs_hf_fp32": stats(hf16["features"], ref),
        "host_fp8_scaled_vs_host_bf16_file": stats(fp8["features"], host["features"]) if fp8 else None,
        "host_encode_s": float(meta["encode_s"]), "host_cache_hit_ms": float(meta["hit_ms"]),
    }
    # Tolerances. Same math in fp32 (ComfyUI's bf16 rounding of 1 + norm weight reproduced):
    # only kernel order differs, so 1e-4 absolute on features of magnitude ~5. Against plain
    # transformers fp32, the host must be no further than upstream's own bf16 inference is.
    checks = {
        "pixeldit_style_equals_host": report["pixeldit_style_vs_host"]["max_abs"] <= 1e-6,
        "host_vs_transformers_fp32_rel_rms_within_upstream_bf16_spread":
            report["host_vs_hf_fp32"]["rel_rms"] <= report["hf_bf16_vs_hf_fp32"]["rel_rms"],
    }
    if hfcn is not None:
        checks["host_equals_transformers_fp32_with_comfy_norm_rounding_atol_1e-4"] = \
            report["host_vs_hf_fp32_with_comfy_norm_rounding"]["max_abs"] <= 1e-4
    report["checks"] = checks
    report["pass"] = all(checks.values())
    (work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if not report["pass"]:
        raise SystemExit(f"equivalence check FAILED: {checks}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=["all", "prepare", "host", "hf", "fp8", "compare"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/pid_text_equiv"))
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="for the hf stage")
    ap.add_argument("--comfy-norm", action="store_true",
                    help="hf stage: round (1 + norm weight) to bf16 as ComfyUI does (diagnostic)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.stage == "all":
        me = [sys.executable, str(Path(__file__).resolve())]
        for stage in (["prepare"], ["host"], ["hf", "--dtype", "fp32"], ["hf", "--dtype", "bf16"],
                      ["hf", "--dtype", "fp32", "--comfy-norm"], ["fp8"],
                      ["compare"]):
            subprocess.run(me + stage + ["--work", str(args.work), "--seed", str(args.seed)], check=True)
        return 0
    torch.set_grad_enabled(False)
    if args.stage == "prepare":
        prepare(args.work, args.seed)
    elif args.stage == "host":
        run_host(args.work)
    elif args.stage == "hf":
        run_hf(args.work, args.dtype, args.comfy_norm)
    elif args.stage == "fp8":
        run_host_fp8(args.work)
    else:
        compare(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
