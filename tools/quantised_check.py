"""Quantised PiD files in a real ComfyUI: made with ComfyUI's own quantisation code, loaded through
PiD Load Model, decoded, and compared with the same net in bf16.

    H=~/.cache/comfy_host_v033                                   # ComfyUI >= 0.33 (quantised ops)
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/quantised_check.py make OUT
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/quantised_check.py check OUT
    H=~/.cache/comfy_host                                        # v0.3.64: expect the refusal
    PYTHONPATH=$H/ComfyUI $H/venv/bin/python tools/quantised_check.py check OUT

``make`` writes a tiny random PiD (FLUX v1.5 family, real key names, ``model.diffusion_model.``
prefix as in the Comfy-Org repack) in bf16 and quantised two ways with ``comfy.quant_ops
.QuantizedTensor.from_float``: int8 convrot (``TensorWiseINT8Layout``, as ``*_int8_convrot``) and
mxfp8 (``TensorCoreMXFP8Layout``). Every Linear whose input width is a multiple of the group size
is quantised (the others stay bf16, as quantisers skip such layers). ``check`` loads each file
through the pack's PiD Load Model node and decodes one latent with fixed text features.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
from pack_import import import_pack

ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_pid_quantised_check"
BASE = "pid_1.5_flux1_1024_to_4096_4step_"
GROUP = 64
TINY = dict(hidden_size=128, num_heads=2, mlp_hidden=256, patch_depth=2, pixel_dim=8, pixel_attn_dim=64,
            pixel_heads=2, adapter_dim=64, adapter_res_blocks=1)


def comfy():
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401  (after --cpu)
    return importlib.import_module("comfy.ops")


def sub(name):
    import_pack(PACK)
    return importlib.import_module(f"{PACK}.{name}")


def make(out: Path) -> None:
    comfy()
    from comfy.quant_ops import QuantizedTensor
    rw, model = sub("pid_core.network.random_weights"), sub("pid_core.network.model")
    cfg = rw.tiny_config("flux_v1.5", **TINY)
    sd = rw.random_state_dict(cfg, seed=5, prefix="", dtype=torch.bfloat16)
    with torch.device("meta"):
        linears = {n: m for n, m in model.PiDNet(cfg).named_modules() if isinstance(m, torch.nn.Linear)}
    layouts = {"int8_convrot": ("TensorWiseINT8Layout", dict(per_channel=True, convrot=True,
                                                             convrot_groupsize=GROUP),
                                {"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": GROUP}),
               "mxfp8": ("TensorCoreMXFP8Layout", {}, {"format": "mxfp8"})}
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    prefix = "model.diffusion_model."
    save_file({prefix + k: v for k, v in sd.items()}, str(out / f"{BASE}bf16.safetensors"))
    for kind, (layout, kw, conf) in layouts.items():
        q, twin, n = dict(sd), dict(sd), 0
        for name, lin in linears.items():
            if lin.in_features % GROUP:
                continue
            qt = QuantizedTensor.from_float(q.pop(f"{name}.weight").float(), layout, **kw)
            q.update(qt.state_dict(f"{name}.weight"))
            q[f"{name}.comfy_quant"] = torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)
            twin[f"{name}.weight"] = qt.dequantize()[:lin.out_features, :lin.in_features].to(torch.bfloat16)
            n += 1
        save_file({prefix + k: v.contiguous() for k, v in q.items()}, str(out / f"{BASE}{kind}.safetensors"))
        # the same quantised values as a plain bf16 file: what the quantised kernels should compute
        save_file({prefix + k: v.contiguous() for k, v in twin.items()},
                  str(out / f"{BASE}{kind}_dequantised.safetensors"))
        print(f"wrote {BASE}{kind}.safetensors: {n} of {len(linears)} Linears quantised ({layout})")


def check(out: Path) -> int:
    comfy()
    import folder_paths
    folder_paths.add_model_folder_path("diffusion_models", str(out))
    load_model, errors = sub("nodes.load_model"), sub("pid_core.errors")
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(1, 16, 8, 8, generator=gen), torch.randn(1, 300, 2304, generator=gen)
    images, status = {}, 0
    for kind in ("bf16", "int8_convrot", "int8_convrot_dequantised", "mxfp8", "mxfp8_dequantised"):
        name = f"{BASE}{kind}.safetensors"
        try:
            model, info = load_model.PiDLoadModel().load(name, "none", "fp32")
        except errors.UnsupportedCheckpointError as exc:
            print(f"{kind:26s} REFUSED: {exc}")
            status |= 0 if kind != "bf16" else 1
            continue
        dec = model.decoder
        images[kind] = dec.decode(z, 0.2, y, latent_format="flux", seed=1)
        print(f"{kind:26s} loaded: {info.splitlines()[1]}; layout {dec.info.layout}; "
              f"image {tuple(images[kind].shape)}")
    for kind in ("int8_convrot", "mxfp8"):
        for ref in ("bf16", f"{kind}_dequantised"):
            if kind in images and ref in images:
                d = (images[kind] - images[ref]).abs()
                print(f"{kind:13s} vs {ref:26s}: max |diff| {d.max():.4f}, mean |diff| {d.mean():.5f} "
                      f"(image in [0, 1])")
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["make", "check"])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.mode == "make":
        make(args.out)
        return 0
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
