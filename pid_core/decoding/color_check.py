"""How far a decode's colours are from a reference picture (the VAE decode of the same latent), on
the low frequencies only, so the detail PiD adds does not count: both images at the reference's
size, low-passed (``color_anchor.low_pass``), in CIELAB (D65, IEC 61966-2-1); per pixel ΔE*ab
(CIE76), the chroma shift and the a*/b* shifts, averaged over the image and over the reference's
shadows / midtones / highlights. A mean ΔE below ``MATCH_DELTA_E`` (about one just-noticeable
difference) reads as a match. Pure torch; images ``[B, 3, H, W]`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PiDInputError
from .color_anchor import low_pass

# sRGB (linear) -> XYZ, D65, and back (IEC 61966-2-1).
RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
D65_WHITE = (0.95047, 1.0, 1.08883)
_EPS = (6 / 29) ** 3
_SLOPE = 3 * (6 / 29) ** 2

# Mean ΔE*ab (CIE76) at or below which the colours read as matching (JND is about 2.3).
MATCH_DELTA_E = 2.0
# A luminance band drifts when its own mean ΔE exceeds this.
BAND_DELTA_E = 3.0
# Default low-pass cutoff in reference px: 8 px at the VAE's size = 32 px of a 4x PiD output,
# the same scale as the Upscale node's colour anchoring.
CHECK_CUTOFF = 8
BANDS = (("shadows", 0.0, 35.0), ("midtones", 35.0, 70.0), ("highlights", 70.0, 101.0))


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).clamp(min=0) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` sRGB in [0, 1] -> CIELAB ``[B, 3, H, W]`` (L* 0..100), float64."""
    lin = srgb_to_linear(rgb.double().clamp(0, 1))
    xyz = torch.einsum("ij,bjhw->bihw", RGB_TO_XYZ.to(lin.device), lin)
    xyz = xyz / torch.tensor(D65_WHITE, dtype=xyz.dtype, device=xyz.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), xyz / _SLOPE + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB ``[B, 3, H, W]`` -> sRGB (unclamped), float64: the inverse of :func:`rgb_to_lab`."""
    lab = lab.double()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > 6 / 29, f ** 3, _SLOPE * (f - 4 / 29))
    xyz = xyz * torch.tensor(D65_WHITE, dtype=xyz.dtype, device=xyz.device).view(1, 3, 1, 1)
    lin = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(RGB_TO_XYZ).to(xyz.device), xyz)
    return linear_to_srgb(lin)


@dataclass(frozen=True)
class Drift:
    """Mean differences image - reference over a set of pixels (``share``: its fraction)."""

    delta_e: float
    chroma: float
    da: float
    db: float
    share: float = 1.0


@dataclass(frozen=True)
class ColorReport:
    overall: Drift
    bands: dict                 # band name -> Drift (bands with no pixels are left out)
    size: tuple[int, int]       # where the comparison ran (the reference's size)

    @property
    def matches(self) -> bool:
        return self.overall.delta_e <= MATCH_DELTA_E and all(
            d.delta_e <= BAND_DELTA_E for d in self.bands.values() if d.share >= 0.05)


def _drift(de, dc, da, db, mask=None) -> Drift:
    if mask is None:
        return Drift(float(de.mean()), float(dc.mean()), float(da.mean()), float(db.mean()))
    n = int(mask.sum())
    return Drift(*(float(v[mask].mean()) for v in (de, dc, da, db)), share=n / mask.numel())


def compare(image: torch.Tensor, reference: torch.Tensor, cutoff: int = CHECK_CUTOFF) -> ColorReport:
    """Colour drift of ``image`` from ``reference`` (both ``[B, 3, H, W]`` in [0, 1], any sizes)."""
    if image.dim() != 4 or reference.dim() != 4 or image.shape[:2] != reference.shape[:2] \
            or image.shape[1] != 3:
        raise PiDInputError(
            f"the colour check needs image and reference as [B, 3, H, W] with the same batch; got "
            f"{tuple(image.shape)} and {tuple(reference.shape)}.")
    ref = reference.float()
    img = image.float()
    if img.shape[-2:] != ref.shape[-2:]:
        img = F.interpolate(img, size=ref.shape[-2:], mode="area")
    img = img.to(ref.device)
    lab_i, lab_r = rgb_to_lab(low_pass(img, cutoff)), rgb_to_lab(low_pass(ref, cutoff))
    diff = lab_i - lab_r
    de = diff.norm(dim=1)
    dc = lab_i[:, 1:].norm(dim=1) - lab_r[:, 1:].norm(dim=1)
    da, db = diff[:, 1], diff[:, 2]
    bands = {}
    for name, lo, hi in BANDS:
        mask = (lab_r[:, 0] >= lo) & (lab_r[:, 0] < hi)
        if mask.any():
            bands[name] = _drift(de, dc, da, db, mask)
    return ColorReport(_drift(de, dc, da, db), bands, tuple(ref.shape[-2:]))


def _lean(d: Drift) -> str:
    """The dominant hue direction of a drift, if any (a*: green-/magenta+, b*: blue-/yellow+)."""
    axis, value = max((("a", d.da), ("b", d.db)), key=lambda kv: abs(kv[1]))
    if abs(value) < 1.5:
        return ""
    word = {("a", False): "green", ("a", True): "magenta", ("b", False): "blue", ("b", True): "yellow"}
    return f"leans {word[axis, value > 0]} (Δ{axis}* {value:+.1f})"


def _share(share: float) -> str:
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


NO_CHECK = ("no colour check: connect the LDM's VAE to PiD Decode Latent's vae input to compare "
            "PiD's colours with a VAE decode of the same latent.")


def describe(report: ColorReport, sigma: float = 0.0, anchored: ColorReport | None = None,
             newer_checkpoint: bool = True) -> str:
    """The text of PiD Decode Latent's colour report (``NO_CHECK`` when no VAE is connected).
    ``newer_checkpoint``: whether a drift verdict may suggest the v1.5 checkpoint (False on v1.5)."""
    o = report.overall
    lines = [f"PiD vs VAE decode (low frequencies, compared at {report.size[1]}x{report.size[0]}): "
             f"mean ΔE {o.delta_e:.1f}, chroma {o.chroma:+.1f}"]
    worst = []
    for name, d in report.bands.items():
        lean = _lean(d)
        lines.append(f"{name} ({_share(d.share)} of pixels): ΔE {d.delta_e:.1f}, chroma {d.chroma:+.1f}"
                     f"{', ' + lean if lean else ''}")
        if d.delta_e > BAND_DELTA_E and d.share >= 0.05:
            worst.append(f"{name} ΔE {d.delta_e:.1f}{' ' + lean if lean else ''}")
    if report.matches:
        lines.append("verdict: colours match the VAE decode")
    else:
        parts = [f"mean ΔE {o.delta_e:.1f}", f"chroma {o.chroma:+.1f}", *worst]
        lines.append(f"verdict: colour drift: {', '.join(parts)}; try anchor_colors"
                     + (" or the v1.5 checkpoint" if newer_checkpoint else ""))
    if anchored is not None:
        lines.append(f"after anchor_colors: mean ΔE {anchored.overall.delta_e:.1f}, "
                     f"chroma {anchored.overall.chroma:+.1f}")
    if sigma > 0:
        lines.append(f"note: sigma {sigma:g} > 0, so the VAE decoded the noisy latent; the check and "
                     f"the anchoring are meaningful for finished latents or a low sigma only.")
    return "\n".join(lines)
