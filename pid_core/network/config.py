"""Network hyper-parameters and the registry of released PiD checkpoints.

Constants come from nv-tlabs/PiD @2c8814c: the net presets in ``pid/_src/configs/pid/net.py``
(PID_SR4X, PID_SR4X_V1PT5, PID_SR4X_V1PT5_FOR_FLUX2), the experiment configs
``pid/_src/configs/pid/experiment_*/shared_config.py``; release folders and training sizes from
the README of the same commit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

# Every released net shares these (net.py presets).
PATCH_SIZE = 16
TEXT_DIM = 2304          # Gemma-2-2B hidden size
TEXT_TOKENS = 300        # txt_max_length
TIMESTEP_SCALE = 1000.0  # the net sees t * 1000


@dataclass(frozen=True)
class PiDNetConfig:
    """Everything needed to build a PiD network (PixelDiT-T2I + latent adapter)."""

    hidden_size: int = 1536
    num_heads: int = 24
    patch_depth: int = 14
    pixel_dim: int = 16
    pixel_attn_dim: int = 1152
    pixel_heads: int = 16
    pixel_depth: int = 2
    patch_size: int = PATCH_SIZE
    text_dim: int = TEXT_DIM
    text_tokens: int = TEXT_TOKENS
    text_rope_theta: float = 1e4
    mlp_hidden: int = 4096              # SwiGLU width: upstream int(2 * int(hidden * 4.0) / 3)
    pixel_mlp_hidden: int = 64          # PiT MLP width: upstream pixel_dim * 4.0
    # latent adapter (LQProjection2D)
    latent_channels: int = 16           # channels of the latent the caller passes
    latent_down: int = 8                # VAE spatial down factor of that latent
    unpatchify: int = 1                 # 2 for flux2 v1.5: 128 ch -> 32 ch at 2x size
    adapter_dim: int = 512              # lq_hidden_dim
    adapter_res_blocks: int = 4
    inject_interval: int = 2            # gate before patch blocks 0, 2, 4, ...
    gate_per_dim: bool = True           # v1: Linear(2H->H); v1.5: Linear(2H->1)
    pit_gate: bool = False              # v1.5: adapter feature gated into the PiT condition
    conv_padding: str = "zeros"         # v1: zeros; v1.5: replicate
    rope_ref_px: int = 1024             # NTK reference size (v1: 1024, v1.5: 2048)
    sr_scale: int = 4                   # output px per latent px / VAE factor

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def pixel_head_dim(self) -> int:
        return self.pixel_attn_dim // self.pixel_heads

    @property
    def num_injections(self) -> int:
        return -(-self.patch_depth // self.inject_interval)

    @property
    def adapter_in_channels(self) -> int:
        return self.latent_channels // (self.unpatchify ** 2)

    @property
    def output_factor(self) -> int:
        """Output pixels per latent pixel (VAE factor x super-resolution scale)."""
        return self.latent_down * self.sr_scale

    @property
    def rope_ref_grid(self) -> int:
        return self.rope_ref_px // self.patch_size

    def replace(self, **changes) -> "PiDNetConfig":
        return dataclasses.replace(self, **changes)


# v1 net preset PID_SR4X (2k and v1 2kto4k releases).
V1 = PiDNetConfig()
# v1.5 preset PID_SR4X_V1PT5: wider adapter, per-token gates, PiT gate, replicate padding, NTK ref 2048.
V1_5 = V1.replace(adapter_dim=1024, gate_per_dim=False, pit_gate=True,
                  conv_padding="replicate", rope_ref_px=2048)



class Envelope(NamedTuple):
    """Output sides (px) a checkpoint was trained for; a whole-image decode stays inside."""

    min_side: int
    max_side: int
    name: str           # "2k" | "2kto4k", as in the release names


# Bucket sizes (H, W) the 2k releases were trained at (README; IMAGE_RES_SIZE_INFO["2048"]).
SIZES_2K = ((2048, 2048), (2304, 1728), (1728, 2304), (2688, 1536), (1536, 2688),
            (2688, 1792), (1792, 2688))
# 2kto4k: long side 2048..4096, area between 2048^2 and about 3840^2 (the multi-resolution grid).
ENVELOPES = {"2k": Envelope(1536, 2688, "2k"), "2kto4k": Envelope(1536, 4096, "2kto4k")}
# (H, W) of the multi-resolution grid the 2kto4k v1.5 nets were trained on (nv-tlabs/PiD @2c8814c
# README "range from 2K to 4K"; the grid of pid/_src/datasets/augmentors/
# multi_resolution_aspect_ratio.py for max_resolution 3840: area levels 2048..3840 step 256 per
# aspect 1:1, 4:3, 3:4, 16:9, 9:16, sides snapped to 64 and capped by pid/_src/datasets/utils.py
# IMAGE_RES_SIZE_INFO["3840"]; duplicates from the caps removed). The v1 2kto4k nets ("varying
# resolution, 2K to 4K") document no grid; this one is offered for them too.
SIZES_2KTO4K = (
    (2048, 2048), (2304, 2304), (2560, 2560), (2816, 2816), (3072, 3072), (3328, 3328), (3584, 3584),
    (1792, 2368), (1984, 2688), (2240, 2944), (2432, 3264), (2688, 3520), (2816, 3840), (2816, 4096),
    (2368, 1792), (2688, 1984), (2944, 2240), (3264, 2432), (3520, 2688), (3840, 2816), (4096, 2816),
    (1536, 2752), (1728, 3072), (1920, 3392), (2112, 3776), (2176, 4096),
    (2752, 1536), (3072, 1728), (3392, 1920), (3776, 2112), (4096, 2176),
)
TRAINED_SIZES = {"2k": SIZES_2K, "2kto4k": SIZES_2KTO4K}
ENVELOPE_2K, ENVELOPE_2KTO4K = ENVELOPES["2k"], ENVELOPES["2kto4k"]


@dataclass(frozen=True)
class Release:
    """One released checkpoint of nvidia/PiD."""

    name: str                 # short id used by the CLI and the download node
    hf_dir: str               # folder under checkpoints/ in the nvidia/PiD repo
    family: str               # latent family: "16ch", "sdxl", "flux2", "dinov2", "siglip"
    version: str              # "v1" or "v1.5"
    resolution: str           # "2k" or "2kto4k"
    formats: tuple            # pid_core.latents names this net was trained on ("normalized": RAE
                              # features, which ComfyUI has no encoder for)
    config: PiDNetConfig = field(repr=False, default=V1)

    @property
    def filename(self) -> str:
        return f"pid_{self.name}.safetensors"


RELEASES = (
    Release("flux_2k", "PiD_res2k_sr4x_official_flux_distill_4step", "16ch", "v1", "2k",
            ("flux",), V1),
    Release("sd3_2k", "PiD_res2k_sr4x_official_sd3_distill_4step", "16ch", "v1", "2k",
            ("sd3",), V1),
    Release("sd3_2kto4k", "PiD_res2kto4k_sr4x_official_sd3_distill_4step", "16ch", "v1", "2kto4k",
            ("sd3",), V1),
    Release("sdxl_2kto4k", "PiD_res2kto4k_sr4x_official_sdxl_distill_4step", "sdxl", "v1", "2kto4k",
            ("sdxl",), V1.replace(latent_channels=4)),
    Release("flux2_2k", "PiD_res2k_sr4x_official_flux2_distill_4step", "flux2", "v1", "2k",
            ("flux2",), V1.replace(latent_channels=128, latent_down=16)),
    Release("dinov2_2k", "PiD_res2k_sr4x_official_dinov2_distill_4step", "dinov2", "v1", "2k",
            ("normalized",), V1.replace(latent_channels=768, latent_down=16)),
    Release("siglip_2k", "PiD_res2k_sr8x_official_siglip_distill_4step", "siglip", "v1", "2k",
            ("normalized",), V1.replace(latent_channels=1152, latent_down=16, sr_scale=8)),
    Release("flux_v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_flux_distill_4step", "16ch", "v1.5",
            "2kto4k", ("flux",), V1_5),
    Release("qwenimage_v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_qwenimage_distill_4step", "16ch",
            "v1.5", "2kto4k", ("qwenimage",), V1_5),
    Release("flux2_v1.5", "PiD_v1pt5_res2kto4k_sr4x_official_flux2_distill_4step", "flux2", "v1.5",
            "2kto4k", ("flux2",), V1_5.replace(latent_channels=128, latent_down=16, unpatchify=2)),
)
RELEASES_BY_NAME = {r.name: r for r in RELEASES}
HF_REPO = "nvidia/PiD"
WEIGHTS_LICENSE = "NVIDIA non-commercial licence (terms on the nvidia/PiD model card)"


def from_upstream_kwargs(kw: dict) -> PiDNetConfig:
    """Map upstream ``PidNet(**kwargs)`` names (as in the parity fixtures' JSON) to our config."""
    if kw.get("lq_in_channels", 0) or kw.get("enable_ed", False):
        raise ValueError("image-branch LQ inputs and the encoder-decoder path are not used by any release")
    if kw.get("rope_ref_h") != kw.get("rope_ref_w"):
        raise ValueError("non-square RoPE references are not used by any release")
    return PiDNetConfig(
        hidden_size=kw["hidden_size"], num_heads=kw["num_groups"], patch_depth=kw["patch_depth"],
        pixel_dim=kw["pixel_hidden_size"], pixel_attn_dim=kw["pixel_attn_hidden_size"],
        pixel_heads=kw["pixel_num_groups"], pixel_depth=kw["pixel_depth"], patch_size=kw["patch_size"],
        text_dim=kw["txt_embed_dim"], text_tokens=kw["txt_max_length"],
        text_rope_theta=kw.get("text_rope_theta", 1e4),
        mlp_hidden=int(2 * int(kw["hidden_size"] * kw.get("mlp_ratio", 4.0)) / 3),
        pixel_mlp_hidden=int(kw["pixel_hidden_size"] * kw.get("mlp_ratio", 4.0)),
        latent_channels=kw["lq_latent_channels"], latent_down=kw["latent_spatial_down_factor"],
        unpatchify=kw.get("lq_latent_unpatchify_factor", 1), adapter_dim=kw["lq_hidden_dim"],
        adapter_res_blocks=kw["lq_num_res_blocks"], inject_interval=kw["lq_interval"],
        gate_per_dim=kw["lq_gate_type"] == "sigma_aware_per_token_per_dim",
        pit_gate=bool(kw.get("pit_lq_inject", False)), conv_padding=kw["lq_conv_padding_mode"],
        rope_ref_px=kw["rope_ref_h"], sr_scale=kw["sr_scale"],
    )
