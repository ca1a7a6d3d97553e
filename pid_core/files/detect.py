"""Normalise checkpoint key layouts and recognise a PiD variant from tensor shapes alone.

Layouts: no prefix, ``net.`` (the official ``model_ema_bf16.pth``, nv-tlabs/PiD @2c8814c
``scripts/convert_distcp_to_pt.py``) or ``model.diffusion_model.`` (the ComfyUI repack); each pixel
block's adaLN fused (``adaLN_modulation.0``, upstream) or split into ``_msa`` / ``_mlp`` halves
(ComfyUI ``comfy/ldm/pixeldit``). Shapes give the adapter's channels and width, the gate shape, the
PiT gate and the backbone dims (so tiny test nets are recognised too); which family a shape means
comes from the release registry. :class:`DecoderInfo` is the one type for what a checkpoint is.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch

from ..errors import NotAPiDCheckpointError, StateDictMismatchError, UnsupportedCheckpointError
from ..network.config import ENVELOPES, RELEASES, Envelope, PiDNetConfig
from ..network.flops import param_count
from .quantised import is_aux_key

log = logging.getLogger(__name__)

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "net.")
SIGNATURE = ("lq_proj.latent_proj.0.weight", "pixel_embedder.proj.weight", "y_pos_embedding")
_SPLIT_RE = re.compile(r"^pixel_blocks\.(\d+)\.adaLN_modulation_(msa|mlp)\.(weight|bias)$")

# What other diffusion files look like, to say what the user picked instead of a PiD decoder.
_OTHER_MODELS = (
    (("encoder.conv_in.weight", "decoder.conv_in.weight"), "a VAE (put it in models/vae/ and use a VAE loader)"),
    (("double_blocks.0.img_attn.qkv.weight",), "a FLUX diffusion model (UNet), not the PiD decoder"),
    (("joint_blocks.0.x_block.attn.qkv.weight",), "an SD3 diffusion model, not the PiD decoder"),
    (("input_blocks.0.0.weight",), "an SD/SDXL UNet, not the PiD decoder"),
    (("transformer_blocks.0.img_mod.1.weight",), "a Qwen-Image diffusion model, not the PiD decoder"),
    (("model.layers.0.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.weight",
      "embed_tokens.weight"), "a text encoder (put Gemma-2-2B in models/text_encoders/)"),
)


def strip_prefix(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Remove the one prefix every PiD key carries; returns (dict, prefix)."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix + SIGNATURE[0]) or k.startswith(prefix + SIGNATURE[1]) for k in sd):
            n = len(prefix)
            return {(k[n:] if k.startswith(prefix) else k): v for k, v in sd.items()}, prefix
    return dict(sd), ""


def fuse_split_adaln(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """ComfyUI's ``adaLN_modulation_msa/mlp`` halves -> the fused upstream ``adaLN_modulation.0``.

    Fused row ``p*6D + j*D + d`` (pixel p, chunk j of shift/scale/gate x msa/mlp, channel d); ComfyUI
    stores chunks 0-2 in ``msa`` and 3-5 in ``mlp``, each as ``p*3D + j*D + d``.
    """
    split_quantised = sorted(k for k in sd if is_aux_key(k, {k.rpartition(".")[0]})
                             and re.match(r"^pixel_blocks\.\d+\.adaLN_modulation_(msa|mlp)\.", k))
    if split_quantised:
        raise UnsupportedCheckpointError(
            f"this file stores the pixel blocks' adaLN split in two halves AND quantised (e.g. "
            f"{split_quantised[0]}); quantised halves cannot be put back into the fused layer "
            f"losslessly. Use the file as published (fused adaLN_modulation.0), or its bf16 copy.")
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    out = {}
    for k, v in sd.items():
        m = _SPLIT_RE.match(k)
        if m:
            parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
        else:
            out[k] = v
    if not parts:
        return sd, False
    for (idx, kind), halves in parts.items():
        if set(halves) != {"msa", "mlp"}:
            out[f"pixel_blocks.{idx}.adaLN_modulation_{next(iter(halves))}.{kind}"] = next(iter(halves.values()))
            out.pop(f"pixel_blocks.{idx}.adaLN_modulation.0.{kind}", None)
            continue  # strict loading then reports the unexpected half and the missing fused key
        msa, mlp = halves["msa"], halves["mlp"]
        d = sd.get(f"pixel_blocks.{idx}.norm1.weight")
        pixel_dim = d.shape[0] if d is not None else 16
        p2 = msa.shape[0] // (3 * pixel_dim)
        rest = msa.shape[1:]
        fused = torch.cat([msa.reshape(p2, 3, pixel_dim, *rest), mlp.reshape(p2, 3, pixel_dim, *rest)], dim=1)
        out[f"pixel_blocks.{idx}.adaLN_modulation.0.{kind}"] = fused.reshape(p2 * 6 * pixel_dim, *rest)
    return out, True


def check_is_pid(sd: dict[str, torch.Tensor], name: str) -> None:
    if any(s in sd for s in SIGNATURE):
        return
    keys = set(sd)
    if not keys:
        raise NotAPiDCheckpointError(
            f"'{name}' holds no tensors at all; a PiD decoder has about 600. The file is an empty "
            f"export or an unfinished download: get the decoder file again.")
    for markers, what in _OTHER_MODELS:
        if any(any(k.endswith(m) for k in keys) for m in markers):
            raise NotAPiDCheckpointError(
                f"'{name}' is {what}. Use a PiD decoder file instead (e.g. model_ema_bf16.pth from "
                f"nvidia/PiD, or a Comfy-Org pid_*.safetensors).")
    first = sorted(keys)[:3]
    raise NotAPiDCheckpointError(
        f"'{name}' is not a PiD decoder: none of its {len(keys)} tensors is named like one (expected "
        f"e.g. net.{SIGNATURE[0]}; found {', '.join(first)}). Select a PiD decoder file.")


@dataclass(frozen=True)
class DecoderInfo:
    """What a PiD checkpoint is: its net config, what a user would recognise, and the file it came from."""

    config: PiDNetConfig
    family: str            # "16ch" | "sdxl" | "flux2" | "dinov2" | "siglip" (config.Release.family)
    version: str           # "v1" | "v1.5"
    resolution: str        # "2k" | "2kto4k"
    latent_formats: tuple  # decoding.latents names this net accepts
    release: str | None    # name in config.RELEASES when the dims are a released net's
    envelope: Envelope | None  # trained output sides; None (unchecked) for custom dims
    name: str = ""             # the file's name
    layout: str = ""           # key prefix, adaLN layout, quantised layers
    source_dtype: str = ""     # dtype of the stored weights

    # read from the config: latent channels, VAE down factor, super-resolution scale, their product
    latent_channels = property(lambda self: self.config.latent_channels)
    vae_factor = property(lambda self: self.config.latent_down)
    sr_scale = property(lambda self: self.config.sr_scale)
    output_factor = property(lambda self: self.config.output_factor)
    param_count = property(lambda self: param_count(self.config))

    def describe(self) -> str:
        return (f"PiD {self.version} {self.resolution} for {'/'.join(self.latent_formats)} latents "
                f"({self.latent_channels} ch), x{self.output_factor} output, {self.param_count / 1e6:.0f}M params"
                f"{', release ' + self.release if self.release else ''}")


def _family_table() -> dict:
    """(version, adapter conv in-channels) -> (family, the release config's latent fields, formats
    of every release of that family and version in registry order)."""
    table: dict = {}
    for r in RELEASES:
        c = r.config
        key = (r.version, c.adapter_in_channels)
        fam, fields, formats = table.get(key, (r.family, (c.latent_channels, c.latent_down,
                                                          c.unpatchify, c.sr_scale), ()))
        table[key] = (fam, fields, formats + tuple(f for f in r.formats if f not in formats))
    return table


_FAMILIES = _family_table()


def _count(sd, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def detect(sd: dict[str, torch.Tensor], name: str = "checkpoint", name_hint: str = "") -> DecoderInfo:
    """Recognise the variant of a prefix-stripped, fused state dict from its shapes."""
    try:
        # Linear out-dims from the bias where there is one: a quantised weight's storage may be
        # padded (mxfp8 blocks); convs, norms and embeddings are never quantised
        cin = sd["lq_proj.latent_proj.0.weight"].shape[1]
        adapter_dim = sd["lq_proj.latent_proj.0.weight"].shape[0]
        gate_rows = sd["lq_proj.gate_modules.0.content_proj.bias"].shape[0]
        hidden = sd["y_pos_embedding"].shape[-1]
        text_tokens = sd["y_pos_embedding"].shape[-2]
        head_dim = sd["patch_blocks.0.attn.q_norm_x.weight"].shape[0]
        pixel_dim = sd["pixel_blocks.0.norm1.weight"].shape[0]
        pixel_attn = sd["pixel_blocks.0.attn.proj.bias"].shape[0]
        pixel_head_dim = sd["pixel_blocks.0.attn.q_norm.weight"].shape[0]
        patch_in = 3 * sd["pixel_blocks.0.adaLN_modulation.0.bias"].shape[0] // (6 * pixel_dim)
        mlp_hidden = sd["patch_blocks.0.mlp_x.w1.weight"].shape[0]
        pixel_mlp = sd["pixel_blocks.0.mlp.fc1.bias"].shape[0]
        text_dim = sd["y_embedder.proj.weight"].shape[1]
    except KeyError as exc:
        raise StateDictMismatchError(
            f"'{name}' looks like a PiD decoder but lacks {exc.args[0]}, which is needed to tell its "
            f"variant; the file is incomplete. Download it again.", missing=[exc.args[0]]) from exc
    pit = "pit_lq_gate.content_proj.weight" in sd or "lq_proj.pit_head.weight" in sd
    version = "v1.5" if (pit or gate_rows == 1) else "v1"
    fam = _FAMILIES.get((version, cin))
    if fam is None:
        known = ", ".join(f"{c} ({f[0]} {v})" for (v, c), f in _FAMILIES.items())
        raise NotAPiDCheckpointError(
            f"'{name}' is a PiD-like net whose latent adapter takes {cin} channels ({version}); known "
            f"releases take {known}. This variant is not supported.")
    family, (lat_ch, down, unpatch, sr), formats = fam
    patch = int(math.isqrt(patch_in // 3))
    cfg = PiDNetConfig(
        hidden_size=hidden, num_heads=hidden // head_dim,
        patch_depth=_count(sd, "patch_blocks."), pixel_dim=pixel_dim, pixel_attn_dim=pixel_attn,
        pixel_heads=pixel_attn // pixel_head_dim, pixel_depth=_count(sd, "pixel_blocks."),
        patch_size=patch, text_dim=text_dim, text_tokens=text_tokens,
        mlp_hidden=mlp_hidden, pixel_mlp_hidden=pixel_mlp,
        latent_channels=lat_ch, latent_down=down, unpatchify=unpatch, adapter_dim=adapter_dim,
        adapter_res_blocks=_count(sd, "lq_proj.latent_proj.") - 3,
        inject_interval=_interval(sd, "lq_proj.gate_modules.", "patch_blocks."),
        gate_per_dim=version == "v1", pit_gate=version == "v1.5",
        conv_padding="zeros" if version == "v1" else "replicate",
        rope_ref_px=1024 if version == "v1" else 2048, sr_scale=sr)
    hint = name_hint.lower()
    resolution = "2kto4k" if (version == "v1.5" or family == "sdxl" or _HINT_4K.search(hint)) else "2k"
    if family == "16ch" and "sd3" in hint:
        formats = ("sd3",) + tuple(f for f in formats if f != "sd3")
    if family == "16ch" and "qwen" in hint:   # v1.5, or the superseded v1 Comfy-Org 2kto4k file
        formats = ("qwenimage",) + tuple(f for f in formats if f != "qwenimage")
    release = _match_release(cfg, family, version, resolution, formats)
    _warn_name_conflict(name, hint, family, version)
    envelope = ENVELOPES[resolution] if release is not None else None
    return DecoderInfo(cfg, family, version, resolution, formats, release, envelope, name=name)


# File-name words -> what they promise, to flag a misnamed file (the tensors decide, not the name).
# Official releases say "2kto4k"; Comfy-Org repack files say "1024_to_4096" (or "512_to_2048").
_HINT_4K = re.compile(r"2kto4k|4k|_to_4096|to4096")
_HINT_VERSION = (("v1.5", "v1.5"), ("v1pt5", "v1.5"), ("v15", "v1.5"), ("pid_1.5_", "v1.5"))
_HINT_FAMILY = (("flux2", "flux2"), ("klein", "flux2"), ("sdxl", "sdxl"), ("dinov2", "dinov2"),
                ("siglip", "siglip"))


def _warn_name_conflict(name: str, hint: str, family: str, version: str) -> None:
    """Log a warning when the file name names another variant than the tensors are."""
    if not hint:
        return
    said = []
    hinted_version = next((v for word, v in _HINT_VERSION if word in hint), None)
    if hinted_version is None and re.search(r"(^|[^a-z0-9])2k([^a-z0-9t]|$)", hint):
        hinted_version = "v1"   # "*_2k" is a v1 release name; v1.5 releases are all 2kto4k
    if hinted_version is not None and hinted_version != version:
        said.append(f"version {hinted_version}")
    hinted_family = next((f for word, f in _HINT_FAMILY if word in hint), None)
    if hinted_family is None and re.search(r"(flux|sd3|qwen|zimage)", hint):
        hinted_family = "16ch"
    if hinted_family is not None and hinted_family != family:
        said.append(f"the {hinted_family} family")
    if said:
        log.warning(
            "PiD file '%s': its name suggests %s, but its tensors are a %s %s decoder; using what "
            "the tensors say. Rename the file to match (e.g. pid_<release>.safetensors) so the "
            "right latent format and size range are offered.", name, " and ".join(said), family,
            version)


def _interval(sd, gate_prefix: str, block_prefix: str) -> int:
    gates, blocks = _count(sd, gate_prefix), _count(sd, block_prefix)
    return next((i for i in range(1, blocks + 1) if -(-blocks // i) == gates), 2)


def _match_release(cfg, family, version, resolution, formats) -> str | None:
    for r in RELEASES:
        if (r.config == cfg and r.family == family and r.version == version
                and r.resolution == resolution and r.formats[0] == formats[0]):
            return r.name
    for r in RELEASES:
        if r.config == cfg and r.family == family and r.version == version:
            return r.name
    return None
