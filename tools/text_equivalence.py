"""Equivalence check: PiD prompt features through the ComfyUI host vs through transformers.

The real Gemma-2-2B-it weights and tokenizer are not available offline,
so exactness is shown mechanically: ONE full-size Gemma-2-2B weights file with random values
(hidden 2304, 26 layers, 8 heads / 4 KV heads, head_dim 256, MLP 9216, vocab 256000, bf16)
and ONE SentencePiece tokenizer (trained here with Gemma's settings: BPE, byte fallback,
split digits, no dummy prefix, identity normalisation, ids pad 0 / eos 1 / bos 2 / unk 3),
stored the way Comfy-Org's ``gemma_2_2b_it_elm_*`` files are (keys ``model.*`` plus the
serialised tokenizer under ``spiece_model``), are encoded

  host      nodes.text_encode.load_text_encoder + encode_prompt inside the real ComfyUI
            (the ``pixeldit`` CLIP type where it exists, ComfyUI >= 0.33; else Lumina 2);
  pixeldit  on ComfyUI >= 0.33 core's own ``pixeldit`` encoder, called as its CLIPTextEncode
            node calls it (``clip.encode_from_tokens_scheduled(clip.tokenize(prompt))``); on older
            ComfyUI an emulation (the same CLIP switched to layer "last", host mask rule, our ids);
  hf_fp32   pid_core.text.gemma_hf.TransformersGemmaEncoder on the same file and tokenizer, fp32;
  hf_bf16   the same in bf16, i.e. upstream's own precision.

Token ids must be identical on every path, and equal to upstream's own tokenizer call
(``tok(chi + caption, max_length=n_chi + 298, padding="max_length", truncation=True)``).

Run (≈6 GB of disk in the work dir, ≈12 GB RAM peak, ~15 min on 2 CPU cores), with H the host env
(``~/.cache/comfy_host_v033`` or ``~/.cache/comfy_host``)::

    W=/tmp/pid_text_equiv/$(basename $H)
    $H/venv/bin/pip install --target $W/pydeps protobuf    # transformers < 5 only (protobuf >= 7.36)
    PYTHONPATH=$H/ComfyUI:$W/pydeps $H/venv/bin/python tools/text_equivalence.py all --work $W

``protobuf`` is needed once by ``prepare`` on transformers < 5 to convert the SentencePiece model (a
current one: sentencepiece 0.2.3's generated code needs protobuf >= 7.36; on 5.x the vocabulary and
merges are handed over directly, tools/standins/gemma.py); ``prepare`` checks the transformers
tokenizer encodes every prompt exactly as SentencePiece does.
Stages: ``prepare`` (tokenizer + weights), ``host``, ``hf``
(``--dtype fp32|bf16``), ``fp8`` (the same weights re-saved fp8-scaled, through the host),
``compare``; ``all`` runs them, each in its own process so the 5 GB models are not held twice;
``compare`` writes ``report.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from standins import gemma

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
    """The tokenizer and weights (``prepare_gemma``) plus the transformers folder ``hf/``."""
    weights = prepare_gemma(work, seed)
    gemma.prepare_hf(work, weights, probe=PROMPTS[0])
    check_hf_tokenizer(work)
    log(f"prepared {work}")


def prepare_gemma(work: Path, seed: int) -> Path:
    """SentencePiece tokenizer and the random Gemma-2-2B file in Comfy-Org's layout (cached);
    returns the weights file. tools/host_fixtures.py uses it as the host's text encoder."""
    text = import_pack("pid_core.text.recipe")
    gemma.prepare_tokenizer(work, [text.CHI_PREAMBLE] + PROMPTS)
    return gemma.prepare_weights(work, seed)


def check_hf_tokenizer(work: Path) -> None:
    """The transformers tokenizer must encode every prompt exactly as SentencePiece does (BOS
    first): a conversion that lost the vocabulary turns every prompt into ``<unk>``."""
    import sentencepiece as spm
    import transformers

    text = import_pack("pid_core.text.recipe")
    sp = spm.SentencePieceProcessor(model_file=str(work / "tokenizer.model"))
    tok = transformers.AutoTokenizer.from_pretrained(str(work / "hf"))
    for s in [text.CHI_PREAMBLE] + PROMPTS:
        want = [sp.bos_id()] + sp.encode(s)
        got = list(tok(s).input_ids)
        if got != want:
            raise SystemExit(
                f"transformers {transformers.__version__} tokenizer in {work / 'hf'} encodes "
                f"{s[:40]!r} as {got[:12]}..., SentencePiece as {want[:12]}...; delete "
                f"{work / 'hf'} and run prepare again")
    log(f"transformers {transformers.__version__} tokenizer: {len(tok)} pieces, encodes like SentencePiece")


# ----------------------------------------------------------------------------- host (ComfyUI)
def comfy_version() -> str:
    try:
        return importlib.import_module("comfyui_version").__version__
    except ImportError:
        return "unknown"


def run_host(work: Path) -> None:
    from safetensors.torch import save_file

    if not torch.cuda.is_available():
        import comfy.cli_args  # ComfyUI picks its device at import: tell it there is no GPU

        comfy.cli_args.args.cpu = True
    import comfy.sd

    te = import_pack("nodes.text_encode")
    text = import_pack("pid_core.text.recipe")
    weights = work / "gemma_2_2b_random_bf16.safetensors"
    log(f"host: ComfyUI at {Path(comfy.sd.__file__).parents[1]}, "
        f"pixeldit CLIP type present: {hasattr(comfy.sd.CLIPType, 'PIXELDIT')}")
    t0 = time.time()
    clip = te.load_text_encoder(weights)
    log(f"host: ComfyUI {comfy_version()}, loaded {type(clip.cond_stage_model).__name__} in "
        f"{time.time() - t0:.1f}s; default layer of its Gemma branch: "
        f"{clip.cond_stage_model.gemma2_2b.layer}/{clip.cond_stage_model.gemma2_2b.layer_idx}")
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

    if hasattr(comfy.sd.CLIPType, "PIXELDIT"):
        # ComfyUI >= 0.33: core's own pixeldit encoder, exactly as its CLIPTextEncode node calls it.
        pix_kind = "core"
        t0 = time.time()
        rows = []
        for prompt in PROMPTS:
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))[0][0]
            rows.append(cond.reshape(-1, cond.shape[-1]).float().cpu())
        shapes = {tuple(r.shape) for r in rows}
        if len(shapes) != 1:
            raise SystemExit(f"core pixeldit conditioning shapes differ per prompt: {shapes}")
        pix = torch.stack(rows)
        log(f"host: core CLIPTextEncode (pixeldit) {tuple(pix.shape)} in {time.time() - t0:.1f}s")
    else:
        # Older ComfyUI has no pixeldit type: drive the same CLIP the way that type does (its
        # SDClipModel switched to layer "last", host mask rule, our padded ids) -- an emulation.
        pix_kind = "emulated"
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
        log(f"host: pixeldit-style forward (emulated) in {time.time() - t0:.1f}s")

    save_file({"features": feats.contiguous(), "pixeldit_features": pix.contiguous(),
               "input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
              str(work / "host.safetensors"),
              metadata={"n_chi": str(batch.n_chi), "encode_s": f"{t_enc:.1f}",
                        "hit_ms": f"{t_hit * 1000:.1f}", "pixeldit": pix_kind,
                        "comfyui": comfy_version()})


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

    text = import_pack("pid_core.text.recipe")
    t0 = time.time()
    enc = import_pack("pid_core.text.gemma_hf").TransformersGemmaEncoder(work / "hf", device="cpu", dtype=dtype)
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

    text = import_pack("pid_core.text.recipe")
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
        "pixeldit_path": meta.get("pixeldit", "emulated"), "comfyui": meta.get("comfyui", "unknown"),
        "pixeldit_vs_host_per_prompt": [
            stats(host["pixeldit_features"][i], host["features"][i]) for i in range(len(PROMPTS))],
        "pixeldit_vs_hf_fp32": stats(host["pixeldit_features"], ref),
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
        # Core's pixeldit type drops the preamble for an empty prompt (README: why we follow
        # upstream instead), so the empty prompt is compared only when the path is our emulation.
        "pixeldit_equals_host": all(
            r["max_abs"] <= 1e-6 for p, r in zip(PROMPTS, report["pixeldit_vs_host_per_prompt"])
            if p.strip() or report["pixeldit_path"] == "emulated"),
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
