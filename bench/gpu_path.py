"""What a CPU can prove about the GPU path: graph breaks, host traffic per step, kernels per call.

* ``graph_breaks``: ``torch._dynamo.explain`` of the network call on tiny nets of every kind
  (4/16/128-channel adapters, v1 and v1.5), whole and tile-sized inputs, chunked or not.
* ``host_traffic``: the decoder with its net on the ``meta`` device (a stand-in accelerator), CPU
  inputs as ComfyUI hands them over; counts device->host reads (``item``/``bool``/``int`` of a
  device tensor: syncs), host->device and device->host copies; per step = (4-step - 2-step) / 2.
* ``op_counts``: aten ops of one network call of the full-size net on ``meta`` at 1024..4096 px.

    python -m bench.gpu_path            # all three tables
"""

from __future__ import annotations

import argparse
import collections
import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pid_core.decoding.decoder import DecodeOptions, PiDDecoder
from pid_core.decoding.memory import chunk_rows
from pid_core.files.detect import DecoderInfo
from pid_core.network.config import RELEASES_BY_NAME
from pid_core.network.model import PiDNet
from pid_core.network.random_weights import random_state_dict, tiny_config

aten = torch.ops.aten
# ops whose result the host reads from the device (under inference mode the composite ones arrive
# here before decomposing)
READS = (aten._local_scalar_dense.default, aten.is_nonzero.default, aten.item.default, aten.equal.default)
KINDS = ("flux_2k", "sdxl_2kto4k", "flux2_2k", "flux_v1.5", "flux2_v1.5")   # 16/4/128 ch, v1/v1.5


class HostTraffic(TorchDispatchMode):
    """Counts reads of device tensors on the host and copies between host and ``device_type``."""

    def __init__(self, device_type: str = "meta"):
        super().__init__()
        self.device_type = device_type
        self.syncs = self.h2d = self.d2h = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dev = self.device_type
        if func in READS and args[0].device.type == dev:
            self.syncs += 1                      # item(), bool(), int(), float(), tolist(), equal()
            return False if func is not aten._local_scalar_dense.default or args[0].dtype == torch.bool else 0
        if func in (aten.nonzero.default, aten.masked_select.default) and args[0].device.type == dev:
            self.syncs += 1                      # data-dependent shapes wait for the device
        src = dst = None
        if func is aten._to_copy.default:
            src, dst = args[0].device, torch.device(kwargs.get("device") or args[0].device)
        elif func is aten.copy_.default:
            dst, src = args[0].device, args[1].device
        if src is not None and src.type == "cpu" and dst.type == dev:
            self.h2d += 1
        if src is not None and src.type == dev and dst.type == "cpu":
            self.d2h += 1
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


def _tiny_net(release: str, device="cpu", dtype=torch.float32) -> PiDNet:
    cfg = tiny_config(release)
    net = PiDNet(cfg, dtype=dtype).eval().requires_grad_(False)
    net.load_state_dict({k[4:]: v.to(dtype) for k, v in random_state_dict(cfg, seed=1).items()})
    return net.to(device)


def graph_breaks(releases=KINDS) -> list[dict]:
    """Graphs and breaks of one network call per kind, shape and chunking (dynamo's explain)."""
    import torch._dynamo as dynamo
    rows = []
    for release in releases:
        net = _tiny_net(release)
        cfg = net.cfg
        for what, (h, w), chunk in (("whole", (64, 96), None), ("whole, chunked", (64, 96), 5),
                                    ("tile-sized", (64, 64), None)):
            f = cfg.output_factor
            g = torch.Generator().manual_seed(0)
            x, y = torch.randn(1, 3, h, w, generator=g), torch.randn(1, 300, 2304, generator=g)
            z = torch.randn(1, cfg.latent_channels, h // f, w // f, generator=g)
            with torch.inference_mode():
                tokens = net.lq_proj.encode(z, (h // 16, w // 16))
                dynamo.reset()
                ex = dynamo.explain(net.velocity)(x, torch.full((1,), 999.0), y, tokens, torch.zeros(1), chunk)
            rows.append(dict(release=release, input=what, graphs=ex.graph_count, breaks=ex.graph_break_count,
                             reasons=[str(r.reason).splitlines()[0] for r in ex.break_reasons]))
    dynamo.reset()
    return rows


def meta_decoder(release: str = "flux_v1.5") -> PiDDecoder:
    """A decoder whose tiny net lives on the meta device (a stand-in accelerator)."""
    cfg = tiny_config(release)
    with torch.device("meta"):
        net = PiDNet(cfg).eval().requires_grad_(False)
    info = DecoderInfo(cfg, "16ch", "v1.5", "2kto4k", RELEASES_BY_NAME[release].formats, None, None)
    return PiDDecoder(net, info)


def host_traffic(size: int = 512, tile: int | None = None, release: str = "flux_v1.5") -> dict:
    """Per-step syncs and copies of a decode with the net on ``meta`` (``tile``: tiles of that side)."""
    dec = meta_decoder(release)
    f = dec.net.cfg.output_factor
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, dec.net.cfg.latent_channels, size // f, size // f, generator=g)
    text = torch.randn(1, 300, 2304, generator=g)
    counts = {}
    for steps in (2, 4):
        plan = dec.plan(latent.shape, tile=tile if tile else None)
        with HostTraffic() as tr:
            dec.decode(latent, 0.3, text, steps=steps, latent_format=dec.info.latent_formats[0], plan=plan,
                       options=DecodeOptions(callback=lambda i, n: None))
        counts[steps] = dataclasses.replace(_Counts(), syncs=tr.syncs, h2d=tr.h2d, d2h=tr.d2h)
    a, b = counts[2], counts[4]
    return dict(size=size, tiles=plan.n_tiles, per_step=dict(syncs=(b.syncs - a.syncs) / 2, h2d=(b.h2d - a.h2d) / 2,
                                                             d2h=(b.d2h - a.d2h) / 2),
                per_decode_2_steps=dataclasses.asdict(a))


@dataclasses.dataclass
class _Counts:
    syncs: int = 0
    h2d: int = 0
    d2h: int = 0


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def op_counts(sides=(1024, 2048, 4096), release: str = "flux_v1.5", dtype=torch.bfloat16) -> list[dict]:
    """aten ops of one network call of the full-size net (on meta) per output side."""
    cfg = RELEASES_BY_NAME[release].config
    with torch.device("meta"):
        net = PiDNet(cfg, dtype=dtype).eval().requires_grad_(False)
    rows = []
    for side in sides:
        f = cfg.output_factor
        with torch.device("meta"), torch.inference_mode():
            x, y = torch.zeros(1, 3, side, side), torch.zeros(1, 300, 2304)
            tokens = net.lq_proj.encode(torch.zeros(1, cfg.latent_channels, side // f, side // f),
                                        (side // 16, side // 16))
            chunk = chunk_rows(cfg, side, side, 1, dtype)
            with _OpCounter() as c:
                net.velocity(x, torch.full((1,), 999.0), y, tokens, torch.zeros(1), chunk)
        rows.append(dict(side=side, ops=sum(c.ops.values()), slice=c.ops["slice"], chunk=chunk))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-breaks", action="store_true", help="skip the graph-break table (slowest)")
    args = ap.parse_args()
    if not args.skip_breaks:
        print("| net | input | graphs | graph breaks |\n|---|---|---|---|")
        for r in graph_breaks():
            print(f"| {r['release']} | {r['input']} | {r['graphs']} | {r['breaks']} |")
    print("\n| decode (net on meta) | tiles | syncs/step | host->device/step | device->host/step |")
    print("|---|---|---|---|---|")
    for size, tile in ((512, None), (1024, None), (512, 256), (1024, 256)):
        r = host_traffic(size, tile)
        p = r["per_step"]
        print(f"| {size}² {'tiled ' + str(tile) if tile else 'whole'} | {r['tiles']} | {p['syncs']:g} | {p['h2d']:g} "
              f"| {p['d2h']:g} |")
    print("\n| full-size flux v1.5 call (meta, bf16) | aten ops | of them slice | chunk rows |\n|---|---|---|---|")
    for r in op_counts():
        print(f"| {r['side']}² | {r['ops']} | {r['slice']} | {r['chunk']} |")


if __name__ == "__main__":
    main()
