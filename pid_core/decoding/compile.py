"""The network call under ``torch.compile`` (one graph, ``fullgraph=True``): a graph is made on the
first call of each input shape, dtype and device and kept with the decoder, so later decodes of that
size reuse it; the first call's cost is logged. A compiler that is missing or fails (no C++ compiler
for the CPU, no Triton for the GPU) never fails a decode: one warning, then the eager call.
"""

from __future__ import annotations

import logging
import time

import torch

from ..errors import PiDError

log = logging.getLogger(__name__)

# PiD Load Model's and the CLI's choices -> torch.compile modes. Modes with CUDA graphs are left out:
# they record the weights' addresses, which ComfyUI changes when it offloads and reloads the model.
COMPILE_CHOICES = {"off": None, "on": "default", "max-autotune": "max-autotune-no-cudagraphs"}
COMPILE_MODES = tuple(m for m in COMPILE_CHOICES.values() if m)


class CompiledNetwork:
    """``network(x, t, y, tokens, sigma, chunk)`` compiled with ``mode`` (``backend`` for tests)."""

    def __init__(self, network, mode: str = "default", backend: str = "inductor"):
        self.network, self.mode = network, mode
        options = {"mode": mode} if backend == "inductor" else {}
        self.compiled = torch.compile(network, dynamic=False, fullgraph=True, backend=backend, **options)
        self.shapes: set[tuple] = set()
        self.failed: str | None = None

    def __call__(self, x, t, y, tokens, sigma, chunk):
        if self.failed is not None:
            return self.network(x, t, y, tokens, sigma, chunk)
        key = (tuple(x.shape), tuple(tokens.shape), x.dtype, str(x.device), chunk)
        if key in self.shapes:
            return self.compiled(x, t, y, tokens, sigma, chunk)
        start = time.perf_counter()
        try:
            out = self.compiled(x, t, y, tokens, sigma, chunk)
        except (torch.OutOfMemoryError, PiDError):
            raise
        except Exception as exc:   # the compiler, not the decode: run it eagerly from now on
            self.failed = _one_line(exc)
            log.warning("PiD: torch.compile (mode %s) could not compile the network (%s); decoding without "
                        "compilation. Install a working toolchain (a C++ compiler for the CPU, Triton for "
                        "NVIDIA GPUs) or set compile to off.", self.mode, self.failed)
            return self.network(x, t, y, tokens, sigma, chunk)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        self.shapes.add(key)
        log.info("PiD: compiled the network for %s %s on %s in %.1f s (kept for later decodes of this size)",
                 "x".join(map(str, x.shape)), str(x.dtype).replace("torch.", ""), x.device,
                 time.perf_counter() - start)
        return out


def _one_line(exc: Exception) -> str:
    """The failure in one line; dynamo's BackendCompilerFailed puts the compiler's own error on the
    line after "backend=... raised:", so lines ending with "raised:" are skipped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().endswith("raised:")]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
