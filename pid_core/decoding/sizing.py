"""Output sizes: the rules a decode's size must follow, and the arithmetic the nodes need.

PiD decodes at ``latent size x output_factor`` by default (nv-tlabs/PiD @2c8814c
``pid/_src/models/pid_distill_model_infer.py``, ``_resolve_inference_image_size``); sides are
multiples of the 16-px patch. A whole-image decode stays inside the checkpoint's trained
envelope (``config.Envelope``); a tiled one may be larger, each tile staying inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PiDInputError
from ..network.config import TRAINED_SIZES
from .memory import canvas_bytes, default_overlap, tile_feature_bytes
from .tiling import tile_grid

PATCH_PX = 16
# An output whose aspect differs from the latent's by more than this factor is refused (the
# latent would be stretched); below it, nearest resampling absorbs the 16-px snapping of sides.
MAX_ASPECT_DISTORTION = 1.25
# Largest side a tiled decode accepts (a sanity bound: 32768^2 x 3 fp32 is 12 GiB per buffer).
MAX_TILED_SIDE = 32768
# Largest output side the nodes offer: the largest size measured end to end (bench/bench_large.py,
# 16384^2 = 268 MP with a canvas of 24 bytes per pixel in system RAM).
MAX_NODE_SIDE = 16384


def int_pair(size) -> tuple[int, int]:
    """``(H, W)`` of whole numbers (ints, or floats with no fraction), else PiDInputError."""
    try:
        h, w = size
        vals = []
        for v in (h, w):
            if isinstance(v, bool):
                raise TypeError
            f = float(v)
            if not f.is_integer():
                raise ValueError
            vals.append(int(f))
    except (TypeError, ValueError, OverflowError):
        raise PiDInputError(f"output_size must be (height, width) in whole pixels, multiples of 16 "
                            f"(e.g. (2048, 2048)); got {size!r:.60}.", input_name="output_size") from None
    return vals[0], vals[1]


def _check_patch_multiple(what: str, h: int, w: int) -> None:
    if h <= 0 or w <= 0 or h % PATCH_PX or w % PATCH_PX:
        near = f"{max(16, round(h / 16) * 16)}x{max(16, round(w / 16) * 16)}"
        raise PiDInputError(f"{what} {h}x{w} is invalid: both sides must be positive multiples "
                            f"of 16 (PiD works on 16x16 pixel patches); the nearest valid size is "
                            f"{near}.", input_name="tile" if what == "tile" else "output_size")


def _check_envelope(what: str, h: int, w: int, envelope, advice: str) -> None:
    if envelope is not None and not (envelope.min_side <= min(h, w) and max(h, w) <= envelope.max_side):
        raise PiDInputError(
            f"{what} {h}x{w} is outside what this checkpoint was trained for ({envelope.name}: "
            f"sides {envelope.min_side}..{envelope.max_side} px){advice}",
            input_name="tile" if what == "tile" else "output_size")


def check_output_size(size, envelope=None, latent_hw=None, output_factor: int = 1) -> tuple[int, int]:
    """Validate a whole-image ``(H, W)``; returns it.

    ``envelope``: the checkpoint's ``config.Envelope`` (None: unchecked). ``latent_hw``: also
    refuse an aspect the latent does not have (it decodes to ``latent_hw x output_factor``).
    """
    h, w = int_pair(size)
    _check_patch_multiple("output size", h, w)
    if latent_hw is not None:
        lh, lw = int(latent_hw[0]), int(latent_hw[1])
        off = (h * lw) / (w * lh)
        if max(off, 1 / off) > MAX_ASPECT_DISTORTION:
            raise PiDInputError(
                f"output size {h}x{w} (H x W) has another shape than the {lh}x{lw} latent (which "
                f"decodes to {lh * output_factor}x{lw * output_factor}): the picture would be "
                f"stretched {max(off, 1 / off):.2f}x. Keep the latent's aspect (were height and "
                f"width swapped?), or crop the latent first.", input_name="output_size")
    _check_envelope("output size", h, w, envelope, "; outside it PiD produces artifacts. Choose a "
                    "size in that range, or use a tiled decode for larger images.")
    return h, w


def check_tiled_output_size(size, envelope=None, tile=None, latent_hw=None,
                            output_factor: int = 1) -> tuple[int, int]:
    """Validate ``(H, W)`` for a tiled decode; returns it.

    The image may be larger than the trained sizes (each tile is decoded as an image of its
    own), but its short side may not be below the envelope (a tile is never larger than the
    image), and an explicit ``tile = (th, tw)`` px must lie in the envelope once clamped.
    """
    h, w = check_output_size(size, None, latent_hw, output_factor)
    if max(h, w) > MAX_TILED_SIDE:
        raise PiDInputError(
            f"output size {h}x{w} is too large for a tiled decode (sides up to "
            f"{MAX_TILED_SIDE} px; one {MAX_TILED_SIDE}^2 RGB buffer alone is "
            f"12 GiB). Choose a smaller output size.", input_name="output_size")
    if envelope is not None and min(h, w) < envelope.min_side:
        _check_envelope("output size", h, w, envelope, f": the short side is below "
                        f"{envelope.min_side} px, which tiling cannot change (a tile is never larger "
                        f"than the image). Choose a larger size.")
    if tile is not None:
        th, tw = tile
        _check_patch_multiple("tile", th, tw)
        _check_envelope("tile", min(th, h), min(tw, w), envelope, "; each tile is decoded as an "
                        "image of its own, so keep tile sides in that range (or use tile='auto').")
    return h, w


def fit_long_side(hw, long_side: int, multiple: int = 16) -> tuple[int, int]:
    """Scale ``hw = (h, w)`` so its long side is ``long_side``; both sides multiples of ``multiple``."""
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise PiDInputError(f"size {h}x{w} has an empty side.")
    if long_side < multiple:
        raise PiDInputError(f"long side {long_side} px is smaller than the {multiple}-px step PiD needs.")
    scale = long_side / max(h, w)

    def snap(x: float) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    return snap(h * scale), snap(w * scale)


def resize_bchw(x: torch.Tensor, size) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``size``: antialiased bicubic when shrinking, bicubic when growing."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    out = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)
    return out.to(x.dtype)


def upscale_sizes(source_hw, long_side: int, sr_scale: int, multiple: int = 64):
    """(output (H, W), VAE input (H, W)) for a PiD upscale of an image of size ``source_hw``.

    The output keeps the source aspect with sides multiples of ``multiple``; the VAE input is the
    output divided by PiD's super-resolution scale.
    """
    out_hw = fit_long_side(source_hw, long_side, multiple)
    if multiple % sr_scale:
        raise PiDInputError(f"snap multiple {multiple} is not divisible by the x{sr_scale} scale.")
    return out_hw, (out_hw[0] // sr_scale, out_hw[1] // sr_scale)


# ------------------------------------------------------------------------ sizes users can pick
# Nominal aspect ratios (W:H) the trained sizes are labelled with (the upstream buckets').
ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (3, 2), (2, 3))


def aspect_name(h: int, w: int) -> str:
    """``"4:3"`` for the nominal aspect nearest to ``w / h``; ``"~4:3"`` when it is not exact."""
    a, b = min(ASPECTS, key=lambda r: abs(math.log((w / h) / (r[0] / r[1]))))
    return f"{'' if w * b == h * a else '~'}{a}:{b}"


def size_label(kind: str, h: int, w: int) -> str:
    return f"{kind}: {w}x{h} ({aspect_name(h, w)})"


def size_presets() -> list[str]:
    """Every trained size of every checkpoint kind, labelled ``"<kind>: <W>x<H> (<aspect>)"``."""
    return [size_label(kind, h, w) for kind, sizes in TRAINED_SIZES.items() for h, w in sizes]


def parse_size_label(label: str) -> tuple[str, tuple[int, int]]:
    """(kind, (H, W)) of a :func:`size_presets` label."""
    kind, rest = label.split(": ", 1)
    w, h = rest.split(" ", 1)[0].split("x")
    return kind, (int(h), int(w))


@dataclass(frozen=True)
class SizeChoice:
    """A PiD output size and what it means for the connected checkpoint."""

    output: tuple[int, int]     # PiD output (H, W)
    ldm: tuple[int, int]        # the LDM's pixel (H, W): what an empty latent node takes
    latent: tuple[int, int]     # the latent's (h, w)
    whole: bool                 # decoded as one image (inside the trained envelope)
    note: str


def choose_size(info, size: tuple[int, int]) -> SizeChoice:
    """What decoding an output of ``size = (H, W)`` px means for the checkpoint ``info``
    (a ``Detection``): its latent and LDM pixel size, whole or tiled, trained size or not.

    Sides snap to the output factor (32 px, 64 for FLUX.2), so the latent is whole. A short side
    below the envelope is refused (tiling cannot help: a tile is never larger than the image).
    """
    f, env = info.output_factor, info.envelope
    h, w = (max(f, int(round(v / f)) * f) for v in size)
    latent = (h // f, w // f)
    ldm = (latent[0] * info.vae_factor, latent[1] * info.vae_factor)
    trained = TRAINED_SIZES.get(info.resolution, ())
    if env is None:
        return SizeChoice((h, w), ldm, latent, True, "custom-dimension net: no trained sizes; decoded "
                          "whole.")
    if min(h, w) < env.min_side:
        raise PiDInputError(
            f"output size {w}x{h} (W x H) has a short side below {env.min_side} px, the smallest "
            f"this {env.name} checkpoint was trained for; PiD refuses it, even tiled. Choose a "
            f"trained size or a short side of at least {env.min_side} px.")
    if max(h, w) <= env.max_side:
        if (h, w) in trained:
            note = f"a trained size of this {env.name} checkpoint; decoded whole."
        else:
            near = min(trained, key=lambda s: abs(math.log(s[1] * h / (s[0] * w))) * 4
                       + abs(math.log(s[0] * s[1] / (h * w))))
            note = (f"inside this {env.name} checkpoint's trained range ({env.min_side}..{env.max_side} "
                    f"px), decoded whole, but not one of its trained sizes; nearest trained: "
                    f"{near[1]}x{near[0]}.")
        return SizeChoice((h, w), ldm, latent, True, note)
    side = env.max_side
    n = len(tile_grid(h, w, side, side, default_overlap(side, side)))
    ram = canvas_bytes(h, w) + tile_feature_bytes(info.config, h, w, (side, side))
    note = (f"beyond this {env.name} checkpoint's trained sides ({env.min_side}..{env.max_side} px): "
            f"PiD Decode Latent will tile it (about {n} tiles of up to {side} px, each inside the "
            f"trained range; fewer, smaller ones if VRAM is short), with the canvas in system RAM "
            f"(about {ram / 2**30:.1f} GiB).")
    return SizeChoice((h, w), ldm, latent, False, note)
