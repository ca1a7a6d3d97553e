"""Quantised (comfy_quant) PiD files: refused without host layers that load them, loaded and decoded
through such layers. A small int8 layer namespace stands in for ComfyUI's mixed-precision ops here;
the real ops are exercised in the v0.33 host by tools/quantised_check.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pid_core import load_decoder
from pid_core.errors import StateDictMismatchError, UnsupportedCheckpointError
from pid_core.network.random_weights import random_state_dict, tiny_config

GEN = torch.Generator().manual_seed(0)


def marker(conf: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)


def quantise_int8(sd: dict, layers) -> dict:
    """Per-output-channel int8 weights + float32 scales + markers, as ComfyUI stores them."""
    out = dict(sd)
    for layer in layers:
        w = out.pop(f"{layer}.weight").float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        out[f"{layer}.weight"] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        out[f"{layer}.weight_scale"] = scale
        out[f"{layer}.comfy_quant"] = marker({"format": "int8_tensorwise"})
    return out


class Int8Linear(nn.Module):
    """Loads its weight from int8 + scale when the file marks the layer, like ComfyUI's ops."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.dtype, self.device = dtype or torch.float32, device
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=self.dtype)) if bias else None
        self.quantised = False

    def _load_from_state_dict(self, sd, prefix, local_metadata, strict, missing, unexpected, errors):
        w = sd.pop(prefix + "weight")
        conf = sd.pop(prefix + "comfy_quant", None)
        if conf is not None:
            assert json.loads(bytes(conf.tolist()))["format"] == "int8_tensorwise"
            w = w.float() * sd.pop(prefix + "weight_scale")
            self.quantised = True
        self.weight = nn.Parameter(w.to(self.device, self.dtype), requires_grad=False)
        super()._load_from_state_dict(sd, prefix, local_metadata, strict, missing, unexpected, errors)
        if prefix + "weight" in missing:
            missing.remove(prefix + "weight")

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


OPS = SimpleNamespace(Linear=Int8Linear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm)
CFG = tiny_config("flux_v1.5", hidden_size=64, mlp_hidden=128, patch_depth=2, adapter_res_blocks=1)
LAYERS = [f"patch_blocks.{i}.{part}" for i in range(2)
          for part in ("attn.qkv_x", "attn.proj_x", "mlp_x.w1", "mlp_x.w2", "mlp_x.w3",
                       "adaLN_modulation_img.0")] + ["pixel_blocks.0.adaLN_modulation.0", "y_embedder.proj"]
NAME = "pid_1.5_flux1_1024_to_4096_4step_int8_convrot.safetensors"


@pytest.fixture(scope="module")
def files():
    plain = random_state_dict(CFG, seed=3, prefix="")
    return plain, {"model.diffusion_model." + k: v for k, v in quantise_int8(plain, LAYERS).items()}


def test_refused_without_quantised_layers_naming_the_bf16_file(files):
    with pytest.raises(UnsupportedCheckpointError) as info:
        load_decoder(files[1], name_hint=NAME)
    msg = str(info.value)
    assert "quantised PiD repack" in msg and f"{len(LAYERS)} quantised layers" in msg
    assert "int8_tensorwise" in msg and "ComfyUI 0.33 or newer" in msg
    assert "pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors" in msg


def test_loads_through_host_layers_and_decodes_close_to_the_float_net(files):
    plain, quant = files
    ref = load_decoder(plain, dtype="fp32")
    dec = load_decoder(quant, dtype="fp32", operations=OPS, quantised=True, name_hint=NAME)
    assert dec.info == ref.info.__class__(**{**ref.info.__dict__, "layout": dec.info.layout,
                                             "name": NAME})        # same variant detected
    assert "quantised layers (int8_tensorwise)" in dec.info.layout
    assert sum(m.quantised for m in dec.net.modules() if isinstance(m, Int8Linear)) == len(LAYERS)
    z, y = torch.randn(1, 16, 2, 2, generator=GEN), torch.randn(1, 300, 2304, generator=GEN)
    a = ref.decode(z, 0.2, y, latent_format="flux", seed=1)
    b = dec.decode(z, 0.2, y, latent_format="flux", seed=1)
    assert a.shape == b.shape == (1, 3, 64, 64)
    assert 0 < (a - b).abs().mean() < 0.02            # int8 rounding, not a different network


def test_strict_loading_still_holds(files):
    _, quant = files
    extra = dict(quant, **{"model.diffusion_model.y_embedder.proj.bogus_scale": torch.ones(1)})
    with pytest.raises(StateDictMismatchError, match="has unexpected 1 weight .*bogus_scale"):
        load_decoder(extra, operations=OPS, quantised=True)
    on_norm = dict(quant, **{"model.diffusion_model.y_embedder.norm.comfy_quant": marker({"format": "x"})})
    with pytest.raises(StateDictMismatchError, match=r"y_embedder\.norm\.comfy_quant \(not a Linear\)"):
        load_decoder(on_norm, operations=OPS, quantised=True)
    missing = {k: v for k, v in quant.items() if not k.endswith("mlp_x.w2.weight")}
    with pytest.raises(StateDictMismatchError, match="is missing 2 weights"):
        load_decoder(missing, operations=OPS, quantised=True)


def test_split_adaln_that_is_quantised_is_refused(files):
    plain, _ = files
    sd = dict(plain)
    w, b = sd.pop("pixel_blocks.0.adaLN_modulation.0.weight"), sd.pop("pixel_blocks.0.adaLN_modulation.0.bias")
    half = w.shape[0] // 2
    for i, part in enumerate(("msa", "mlp")):
        sd[f"pixel_blocks.0.adaLN_modulation_{part}.weight"] = w[i * half:(i + 1) * half]
        sd[f"pixel_blocks.0.adaLN_modulation_{part}.bias"] = b[i * half:(i + 1) * half]
    sd = quantise_int8(sd, ["pixel_blocks.0.adaLN_modulation_msa"])
    with pytest.raises(UnsupportedCheckpointError, match="split in two halves AND quantised"):
        load_decoder(sd, operations=OPS, quantised=True)


@pytest.mark.parametrize("name,alt", [
    ("pid_1.5_flux1_1024_to_4096_4step_int8_convrot.safetensors", "pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors"),
    ("pid_1.5_qwenimage_1024_to_4096_4step_mxfp8.safetensors",
     "pid_1.5_qwenimage_1024_to_4096_4step_bf16.safetensors"),
    ("sub/pid_flux2_512_to_2048_4step_mxfp8.safetensors", "pid_flux2_512_to_2048_4step_bf16.safetensors"),
    ("my_quant.safetensors", "the bf16 safetensors of the same decoder"),
])
def test_the_refusal_names_the_bf16_twin(name, alt):
    from pid_core.files.quantised import bf16_alternative
    assert bf16_alternative(name).startswith(alt)
