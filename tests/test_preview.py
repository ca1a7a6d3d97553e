"""Live previews: one preview per network call, of the right size, whole and tiled; none when off
(the node glue is in test_nodes.py)."""

from __future__ import annotations

import pytest
import torch

from pid_core.decoding.decoder import DecodeOptions, load_decoder
from pid_core.decoding.progress import PreviewCanvas, preview_size

pytestmark = pytest.mark.usefixtures("one_thread")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dec():
    from pid_core.network.random_weights import random_state_dict, tiny_config
    return load_decoder(random_state_dict(tiny_config("flux_v1.5", patch_depth=2, adapter_res_blocks=1)),
                        dtype="fp32")


def test_preview_size_keeps_aspect_and_caps_the_long_side():
    assert preview_size((128, 192), 512) == (128, 192)          # small images: full size
    assert preview_size((128, 192), 64) == (43, 64)
    assert preview_size((16384, 16384), 512) == (512, 512)
    assert preview_size((2304, 4096), 512) == (288, 512)


def test_canvas_shows_the_estimate_downscaled():
    img = torch.rand(1, 3, 256, 384, generator=torch.Generator().manual_seed(3))
    seen = []
    canvas = PreviewCanvas((256, 384), 96, seen.append, budget=None)
    canvas.land(img * 2 - 1)
    want = torch.nn.functional.interpolate(img[:, :, ::2, ::2], size=(64, 96), mode="area")[0]
    assert seen[0].shape == (64, 96, 3) and seen[0].dtype == torch.uint8
    assert (seen[0].permute(2, 0, 1) / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    canvas.land(torch.ones(1, 3, 128, 128), (128, 192))            # a tile at rows 128.., cols 192..320
    assert (seen[1][32:, 48:80] == 255).all()
    assert torch.equal(seen[1][:32], seen[0][:32]) and torch.equal(seen[1][:, 80:], seen[0][:, 80:])


def test_whole_decode_previews_every_step_before_its_callback(dec):
    z, y = randn(1, 16, 4, 6), randn(1, 300, 2304)
    events = []
    out = dec.decode(z, 0.0, y, latent_format="flux", steps=3, options=DecodeOptions(
        callback=lambda i, n: events.append(("step", i, n)),
        preview=lambda im: events.append(("preview", tuple(im.shape), im.clone())),
        preview_side=64, preview_budget=None))
    assert [e[0] for e in events] == ["preview", "step"] * 3
    shapes = {e[1] for e in events if e[0] == "preview"}
    assert shapes == {(43, 64, 3)}                              # 128 x 192 output, long side 64
    assert events[-2][2].dtype == torch.uint8
    plain = dec.decode(z, 0.0, y, latent_format="flux", steps=3)
    assert torch.equal(plain, out)                             # previews change nothing


def test_tiled_decode_previews_the_canvas_as_tiles_land(dec):
    z, y = randn(1, 16, 4, 4, seed=1), randn(1, 300, 2304)
    plan = dec.plan(z.shape, tile=64)
    assert plan.n_tiles == 9
    seen = []
    dec.decode(z, 0.0, y, latent_format="flux", steps=2, plan=plan, options=DecodeOptions(
        preview=lambda im: seen.append(im.clone()), preview_side=512, preview_budget=None))
    assert len(seen) == plan.progress_total(2) == 18
    assert all(tuple(im.shape) == (128, 128, 3) for im in seen)
    # first tile of the first step: only its 64 x 64 region is filled, the rest still black
    first = seen[0].int()
    assert first[:64, :64].sum() > 0 and first[64:, :].sum() == 0
    assert (seen[8] > 0).any(dim=-1).float().mean() > 0.99     # after 9 tiles: all covered


def test_no_preview_when_disabled_costs_nothing(dec, monkeypatch):
    from pid_core.decoding import decoder
    built = []
    monkeypatch.setattr(decoder, "PreviewCanvas", lambda *a: built.append(a) or PreviewCanvas(*a))
    z, y = randn(1, 16, 2, 2), randn(1, 300, 2304)
    dec.decode(z, 0.0, y, latent_format="flux", steps=2)
    assert built == []
    dec.decode(z, 0.0, y, latent_format="flux", steps=2, options=DecodeOptions(preview=lambda im: None))
    assert len(built) == 1


def test_previews_are_rationed_to_the_budget():
    """After a preview that cost c seconds the next waits c / budget; skipped estimates change
    nothing but the picture."""
    now = [0.0]
    shown = []

    def sink(im):
        now[0] += 0.5                          # every preview costs 0.5 s of (fake) time
        shown.append(now[0])

    canvas = PreviewCanvas((64, 64), 32, sink, budget=0.01, clock=lambda: now[0])
    x = torch.zeros(1, 3, 64, 64)
    assert canvas.land(x)                      # the first one always
    for _ in range(10):
        now[0] += 10.0                         # 10 s of decoding per call
        canvas.land(x)
    assert shown == [0.5, 51.0, 101.5]          # 0.5 s each, then 50 s without: 1 % of the time
    assert canvas.shown == 3
    assert PreviewCanvas((64, 64), 32, lambda im: None, budget=None).land(x)
