"""pid_core.decoding.latents: per-backbone normalisation, noise-frame conversion, shape and name errors."""

import dataclasses
import math

import pytest
import torch

from pid_core.decoding.latents import LATENT_FORMATS, LatentFormat, as_4d, get_latent_format
from pid_core.errors import LatentMismatchError, PiDInputError

QWEN_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
             0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
QWEN_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
            3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def _raw(channels, b=2, h=3, w=5, seed=0):
    return torch.randn(b, channels, h, w, generator=torch.Generator().manual_seed(seed)) * 2 + 0.3


def test_registry_names_and_fields():
    assert set(LATENT_FORMATS) == {"flux", "sd3", "sdxl", "qwenimage", "flux2", "normalized"}
    got = {n: (f.channels, f.vae_factor, f.frame) for n, f in LATENT_FORMATS.items()}
    assert got == {
        "flux": (16, 8, "flow"), "sd3": (16, 8, "flow"), "sdxl": (4, 8, "ve"),
        "qwenimage": (16, 8, "flow"), "flux2": (128, 16, "flow"), "normalized": (None, None, "flow"),
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        LATENT_FORMATS["flux"].scale = 1.0


@pytest.mark.parametrize("name, channels, shift, scale", [
    ("flux", 16, 0.1159, 0.3611),
    ("sd3", 16, 0.0609, 1.5305),
    ("sdxl", 4, 0.0, 0.13025),
])
def test_scalar_formats_match_hand_computed(name, channels, shift, scale):
    raw = _raw(channels)
    out = get_latent_format(name).process_in(raw)
    assert out.dtype == torch.float32 and out.shape == raw.shape
    torch.testing.assert_close(out, (raw - shift) * scale, rtol=0, atol=1e-6)
    # two hand-made points: z = shift -> 0, z = shift + 1 -> scale
    z = torch.full((1, channels, 1, 2), shift)
    z[..., 1] += 1.0
    pts = get_latent_format(name).process_in(z)
    assert pts[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert pts[0, 0, 0, 1].item() == pytest.approx(scale, rel=1e-6)


def test_qwenimage_per_channel_mean_std():
    fmt = get_latent_format("qwenimage")
    mean = torch.tensor(QWEN_MEAN).view(1, 16, 1, 1)
    std = torch.tensor(QWEN_STD).view(1, 16, 1, 1)
    raw = _raw(16)
    torch.testing.assert_close(fmt.process_in(raw), (raw - mean) / std, rtol=1e-6, atol=1e-6)
    # z = mean + k*std -> k in every channel
    k = torch.tensor([-1.0, 0.0, 2.0]).view(1, 1, 1, 3)
    out = fmt.process_in(mean + k * std)
    torch.testing.assert_close(out, k.expand(1, 16, 1, 3), rtol=0, atol=1e-5)


def test_qwenimage_accepts_singleton_time_axis():
    raw4 = _raw(16)
    raw5 = raw4.unsqueeze(2)  # [B,16,1,h,w] as ComfyUI's Wan-family VAEs emit it
    fmt = get_latent_format("qwen")
    out = fmt.process_in(raw5)
    assert out.shape == raw4.shape
    assert torch.equal(out, fmt.process_in(raw4))


@pytest.mark.parametrize("name, channels", [("flux2", 128), ("normalized", 7), ("normalized", 128)])
def test_identity_formats(name, channels):
    raw = _raw(channels).to(torch.bfloat16)
    out = get_latent_format(name).process_in(raw)
    assert out.dtype == torch.float32
    assert torch.equal(out, raw.float())


def test_output_is_float32_for_half_inputs():
    raw = _raw(16).to(torch.float16)
    out = get_latent_format("flux").process_in(raw)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (raw.float() - 0.1159) * 0.3611, rtol=0, atol=1e-6)


# --- noise frames -----------------------------------------------------------------------------

def test_sdxl_ve_to_vp_algebra():
    fmt = get_latent_format("sdxl")
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 2, 2, generator=g)
    eps = torch.randn(3, 4, 2, 2, generator=g)
    s_ve = torch.tensor([0.0, 1.0, 14.6])
    x_ve = x0 + s_ve.view(-1, 1, 1, 1) * eps  # EPS-model (VE) frame
    x_vp, s_vp = fmt.to_pid_frame(x_ve, s_ve)
    # hand-computed sigmas: s / sqrt(s^2 + 1)
    expected_s = torch.tensor([0.0, 1 / math.sqrt(2), 14.6 / math.sqrt(14.6**2 + 1)])
    torch.testing.assert_close(s_vp, expected_s, rtol=1e-6, atol=0)
    # the result is the VP form PiD was trained with: sqrt(1 - s^2) x0 + s eps
    vp = torch.sqrt(1 - s_vp**2).view(-1, 1, 1, 1) * x0 + s_vp.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(x_vp, vp, rtol=1e-5, atol=1e-5)
    assert torch.equal(x_vp[0], x0[0])  # sigma 0 leaves a clean latent alone


def test_sdxl_scalar_sigma_broadcasts():
    x = torch.ones(2, 4, 1, 1)
    x_vp, s_vp = get_latent_format("sdxl").to_pid_frame(x, 3.0)
    assert s_vp.shape == (2,)
    torch.testing.assert_close(s_vp, torch.full((2,), 3 / math.sqrt(10)))
    torch.testing.assert_close(x_vp, torch.full_like(x, 1 / math.sqrt(10)))


@pytest.mark.parametrize("name", ["flux", "sd3", "qwenimage", "flux2", "normalized"])
def test_flow_formats_keep_latent_and_sigma(name):
    x = _raw(3, b=2)
    out, s = get_latent_format(name).to_pid_frame(x, torch.tensor([0.0, 0.3449]))
    assert torch.equal(out, x)
    assert s.dtype == torch.float32 and torch.equal(s, torch.tensor([0.0, 0.3449]))
    _, s1 = get_latent_format(name).to_pid_frame(x, torch.tensor(0.25))
    assert torch.equal(s1, torch.tensor([0.25, 0.25]))


def _noised(alpha, beta, b=3, c=16):
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(b, c, 2, 2, generator=g), torch.randn(b, c, 2, 2, generator=g)
    return x0, eps, alpha.view(-1, 1, 1, 1) * x0 + beta.view(-1, 1, 1, 1) * eps


def test_comfyui_flow_latent_is_scaled_back_to_x_t():
    """ComfyUI returns x_t / (1 - s) for a flow model (CONST.inverse_noise_scaling): PiD gets x_t."""
    s = torch.tensor([0.0, 0.3449, 0.9])
    x0, eps, x_t = _noised(1 - s, s)
    stored = x_t / (1 - s).view(-1, 1, 1, 1)
    out, t = get_latent_format("flux").to_pid_frame(stored, s, "comfy_flow")
    torch.testing.assert_close(out, x_t, rtol=1e-6, atol=1e-6)
    assert torch.equal(t, s) and torch.equal(out[0], stored[0])
    with pytest.raises(PiDInputError, match="below 1 for a ComfyUI LATENT"):
        get_latent_format("flux").to_pid_frame(stored, 1.0, "comfy_flow")


@pytest.mark.parametrize("name,frame,alpha,beta", [
    ("flux", "ve", lambda s: torch.ones_like(s), lambda s: s),               # COSMOS_RFLOW-style
    ("sdxl", "flow", lambda s: 1 - s, lambda s: s),                          # AuraFlow on SDXL-VAE
    ("sdxl", "comfy_flow", lambda s: torch.ones_like(s), lambda s: s / (1 - s)),
])
def test_every_frame_maps_to_the_checkpoints_training_frame(name, frame, alpha, beta):
    """A Gaussian-noised latent in one frame is a scaled latent of another at a mapped sigma: the
    result must be exactly PiD's frame (flow: (1-t) x0 + t eps; VP: sqrt(1-t^2) x0 + t eps)."""
    s = torch.tensor([0.0, 0.3, 0.7])
    fmt = get_latent_format(name)
    x0, eps, x = _noised(alpha(s), beta(s), c=fmt.channels)
    out, t = fmt.to_pid_frame(x, s, frame)
    signal = (1 - t) if fmt.pid_frame == "flow" else torch.sqrt(1 - t * t)
    want = signal.view(-1, 1, 1, 1) * x0 + t.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert float(t[0]) == 0.0 and (t[1:] > 0).all() and (t < 1).all()


@pytest.mark.parametrize("name, sigma, match", [
    ("flux", 1.5, r"above 1 for the flow-matching format 'flux'"),
    ("sdxl", -0.1, r"finite and >= 0"),
    ("flux", float("nan"), r"finite"),
    ("flux", torch.tensor([0.1, 0.2, 0.3]), r"3 values but the latent batch is 2"),
    ("flux", "0.5", r"number or a tensor"),
])
def test_bad_sigma(name, sigma, match):
    with pytest.raises(PiDInputError, match=match):
        get_latent_format(name).to_pid_frame(torch.zeros(2, 16, 2, 2), sigma)


# --- shapes and channels ----------------------------------------------------------------------

def test_as_4d():
    x = torch.zeros(1, 16, 4, 6)
    assert as_4d(x) is x
    assert as_4d(x.unsqueeze(2)).shape == (1, 16, 4, 6)


@pytest.mark.parametrize("shape, match", [
    ((1, 16, 3, 8, 8), r"shape \(1, 16, 3, 8, 8\) with 3 frames.*expected \[B,C,h,w\] or \[B,C,1,h,w\]"),
    ((16, 8, 8), r"3-D latent of shape \(16, 8, 8\).*expected \[B,C,h,w\]"),
    ((1, 1, 16, 8, 8, 1), r"6-D latent"),
])
def test_bad_ranks(shape, match):
    with pytest.raises(PiDInputError, match=match):
        get_latent_format("qwenimage").process_in(torch.zeros(shape))


def test_non_tensor_latent():
    with pytest.raises(PiDInputError, match=r"not the LATENT dict"):
        as_4d({"samples": torch.zeros(1, 16, 2, 2)})


def test_integer_latent_rejected():
    with pytest.raises(PiDInputError, match=r"floating-point"):
        get_latent_format("flux").process_in(torch.zeros(1, 16, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize("name, channels, match", [
    ("flux", 4, r"'flux'.*expects 16-channel.*\(1, 4, 2, 3\) with 4 channels.*SDXL"),
    ("sdxl", 16, r"'sdxl'.*expects 4-channel.*16 channels.*FLUX.1"),
    ("flux2", 16, r"'flux2'.*expects 128-channel"),
    ("qwenimage", 128, r"128 channels \(that looks like a FLUX.2 latent\)"),
])
def test_channel_mismatch(name, channels, match):
    with pytest.raises(LatentMismatchError, match=match) as info:
        get_latent_format(name).process_in(torch.zeros(1, channels, 2, 3))
    assert isinstance(info.value, ValueError)


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias, name", [
    ("flux", "flux"), ("FLUX", "flux"), ("zimage", "flux"), ("Z-Image", "flux"), ("flux1", "flux"),
    ("FLUX.1", "flux"), ("boogu", "flux"), ("sd3", "sd3"), ("SD3.5", "sd3"), ("sdxl", "sdxl"),
    ("qwen", "qwenimage"), ("Qwen-Image", "qwenimage"), ("klein", "flux2"), ("flux_2", "flux2"),
    ("normalized", "normalized"),
])
def test_aliases(alias, name):
    assert get_latent_format(alias) is LATENT_FORMATS[name]


def test_format_object_passes_through():
    custom = LatentFormat("mine", 16, 8, "flow", scale=2.0)
    assert get_latent_format(custom) is custom
    torch.testing.assert_close(custom.process_in(torch.ones(1, 16, 1, 1)), torch.full((1, 16, 1, 1), 2.0))


def test_unknown_name_lists_valid_names():
    with pytest.raises(PiDInputError, match=r"unknown latent format 'wan22'.*flux, sd3, sdxl, qwenimage, "
                                             r"flux2, normalized.*zimage->flux"):
        get_latent_format("wan22")


def test_wrong_type_name():
    with pytest.raises(PiDInputError, match=r"got int.*Valid names"):
        get_latent_format(16)
