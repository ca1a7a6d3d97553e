"""Peak live-tensor bytes of a piece of code, traced on the ``meta`` device (no GPU, no compute).

Runs ``fn`` under a ``TorchDispatchMode`` that counts every storage created by an ATen op on
the traced device and forgets it when the storage is freed, so the peak is what a caching
allocator would have had to hold at once (before fragmentation and the allocator's rounding).
Used to check ``pid_core.decoding.memory.estimate_memory`` against the real code path: run the decoder
with a full-size network built on the meta device at 4096 x 4096 in milliseconds.

Limitations: SDPA is replaced by a stand-in that allocates only its output (flash / memory-
efficient kernels keep O(N) workspace, the meta device would otherwise trace the O(N^2) math
fallback); cuBLAS workspaces and allocator slack are not modelled.
"""

from __future__ import annotations

import contextlib
import traceback
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _Tracker(TorchDispatchMode):
    def __init__(self, device_type: str, where: bool = False):
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.peak = 0
        self.peak_where = ""      # pid_core frames at the peak (with where=True)
        self._where = where
        self._seen: dict[int, int] = {}

    def _track(self, t: torch.Tensor) -> None:
        if t.device.type != self.device_type:
            return
        st = t.untyped_storage()
        key = st._cdata
        if key in self._seen:
            return
        n = st.nbytes()
        self._seen[key] = n
        self.live += n
        if self.live > self.peak:
            self.peak = self.live
            if self._where:
                frames = [f for f in traceback.extract_stack() if "pid_core" in f.filename]
                self.peak_where = " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(frames[-4:]))

        def free(key=key, n=n, seen=self._seen, me=weakref.ref(self)):
            tracker = me()
            if tracker is not None and seen.pop(key, None) is not None:
                tracker.live -= n

        weakref.finalize(st, free)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that alias an input (views, in-place and out= ops) allocate nothing
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in inputs:
                self._track(t)
        return out


def _sdpa_output_only(q, k, v, *args, **kwargs):
    return q.new_empty(q.shape[:-1] + (v.shape[-1],))


@contextlib.contextmanager
def trace_peak(device_type: str = "meta", fake_sdpa: bool = True, where: bool = False):
    """``with trace_peak() as tr: ...``; then ``tr.peak`` is the peak of live bytes created inside.

    ``where=True`` also records the library frames active when the peak was reached.
    """
    tracker = _Tracker(device_type, where)
    real = F.scaled_dot_product_attention
    if fake_sdpa:
        F.scaled_dot_product_attention = _sdpa_output_only
    try:
        with tracker:
            yield tracker
    finally:
        F.scaled_dot_product_attention = real


def meta_decoder(cfg, dtype=torch.bfloat16):
    """A PiDDecoder whose full-size network lives on the meta device (no memory, no compute)."""
    from pid_core.decoding.decoder import PiDDecoder
    from pid_core.files.detect import DecoderInfo
    from pid_core.network.model import PiDNet

    with torch.device("meta"):
        net = PiDNet(cfg, dtype=dtype).eval().requires_grad_(False)
    info = DecoderInfo(config=cfg, family="meta", version="", resolution="",
                       latent_formats=("normalized",), release=None, envelope=None,
                       source_dtype=str(dtype))
    return PiDDecoder(net, info)


def traced_peak(decoder, plan, steps: int = 4, where: bool = False):
    """Peak activation bytes (weights excluded) of ``decoder._run(plan, ...)`` on the meta device.

    ``decoder`` comes from ``meta_decoder``; ``plan`` from ``decoder.plan`` or pid_core.decoding.memory.
    Returns the tracker (``.peak``, ``.peak_where``).
    """
    from pid_core.decoding.decoder import DecodeOptions
    from pid_core.decoding.sampler import t_schedule

    cfg = decoder.net.cfg
    b = plan.batch
    h, w = plan.output_size
    f = cfg.output_factor
    with torch.inference_mode(), trace_peak(where=where) as tr:
        z = torch.zeros(b, cfg.latent_channels, max(1, h // f), max(1, w // f), device="meta")
        y = torch.zeros(b, cfg.text_tokens, cfg.text_dim, device="meta")
        sig = torch.zeros(b, device="meta")
        decoder._run(plan, z, sig, y, 0, t_schedule(steps), DecodeOptions())
    return tr
