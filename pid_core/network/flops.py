"""Analytic size and cost of the network: its parameter count, and the FLOPs of a network call and
of a whole decode (a multiply-add is 2 FLOPs). Pure functions of the config and the output size:
the memory planner uses the first, the benchmarks divide measured time by the others.
"""

from __future__ import annotations

import functools

from .config import PiDNetConfig


@functools.lru_cache(maxsize=64)
def param_count(cfg: PiDNetConfig) -> int:
    """Parameters of ``network.model.PiDNet(cfg)``, layer by layer (tests check it against the net)."""
    H, p2, pd, A, hid = cfg.hidden_size, cfg.patch_size ** 2, cfg.pixel_dim, cfg.pixel_attn_dim, cfg.adapter_dim
    gate_out = H if cfg.gate_per_dim else 1

    def lin(i, o, bias=True):
        return i * o + (o if bias else 0)

    patch = (4 * H + 2 * lin(H, 3 * H, False) + 4 * cfg.head_dim + 2 * lin(H, H)
             + 6 * lin(H, cfg.mlp_hidden, False) + 2 * lin(H, 6 * H))
    pixel = (lin(p2 * pd, A) + lin(A, p2 * pd) + 2 * pd + lin(A, 3 * A, False) + 2 * cfg.pixel_head_dim
             + lin(A, A) + lin(pd, cfg.pixel_mlp_hidden) + lin(cfg.pixel_mlp_hidden, pd) + lin(H, 6 * p2 * pd))
    gate = 1 + lin(2 * H, gate_out)
    adapter = (9 * cfg.adapter_in_channels * hid + hid + 9 * hid * hid + hid
               + cfg.adapter_res_blocks * (4 * hid + 2 * (9 * hid * hid + hid))
               + (cfg.num_injections + cfg.pit_gate) * lin(hid, H) + cfg.num_injections * gate)
    return (cfg.text_tokens * H + lin(3, pd) + lin(3 * p2, H) + lin(256, H) + lin(H, H)
            + lin(cfg.text_dim, H) + H + cfg.patch_depth * patch + cfg.pixel_depth * pixel
            + pd + lin(pd, 3) + adapter + (gate if cfg.pit_gate else 0))


def forward_flops(cfg: PiDNetConfig, height: int, width: int, batch: int = 1,
                  text_tokens: int | None = None) -> dict[str, float]:
    """FLOPs of one network call at ``height x width`` output, per module group.

    Keys: ``patch.{qkv,attention,proj,mlp,adaLN}``, ``pixel.{adaLN,compress_expand,qkv_proj,
    attention,mlp}``, ``embed``, ``gates``, ``final``, ``adapter.trunk``, ``adapter.heads``.
    Attention counts QK^T and AV (``4 N^2 d`` per head). The last patch block's unused text
    update is not counted (this package skips it).
    """
    T = cfg.text_tokens if text_tokens is None else int(text_tokens)
    p = cfg.patch_size
    L = (height // p) * (width // p)
    N = L + T
    D, Fh, A = cfg.hidden_size, cfg.mlp_hidden, cfg.pixel_attn_dim
    P2, d, hid = p * p, cfg.pixel_dim, cfg.adapter_dim
    nb = cfg.patch_depth

    def lin(m, k, n):
        return 2.0 * m * k * n

    f = {
        "patch.adaLN": nb * 2 * lin(1, D, 6 * D),
        "patch.qkv": nb * lin(N, D, 3 * D),
        "patch.attention": nb * 4.0 * N * N * D,
        "patch.proj": nb * lin(L, D, D) + (nb - 1) * lin(T, D, D),
        "patch.mlp": nb * 3 * lin(L, D, Fh) + (nb - 1) * 3 * lin(T, D, Fh),
        "pixel.adaLN": cfg.pixel_depth * lin(L, D, 6 * P2 * d),
        "pixel.compress_expand": cfg.pixel_depth * 2 * lin(L, P2 * d, A),
        "pixel.qkv_proj": cfg.pixel_depth * (lin(L, A, 3 * A) + lin(L, A, A)),
        "pixel.attention": cfg.pixel_depth * 4.0 * L * L * A,
        "pixel.mlp": cfg.pixel_depth * 2 * lin(L * P2, d, cfg.pixel_mlp_hidden),
        "embed": lin(L, 3 * P2, D) + lin(T, cfg.text_dim, D) + lin(L * P2, 3, d)
        + lin(1, 256, D) + lin(1, D, D),
        "gates": cfg.num_injections * lin(L, 2 * D, D if cfg.gate_per_dim else 1)
        + (lin(L, 2 * D, D if cfg.gate_per_dim else 1) if cfg.pit_gate else 0.0),
        "final": lin(L * P2, d, 3),
        "adapter.trunk": lin(L, 9 * cfg.adapter_in_channels, hid)
        + (1 + 2 * cfg.adapter_res_blocks) * lin(L, 9 * hid, hid),
        "adapter.heads": (cfg.num_injections + cfg.pit_gate) * lin(L, hid, D),
    }
    return {k: v * batch for k, v in f.items()}


def decode_flops(cfg: PiDNetConfig, height: int, width: int, batch: int = 1, steps: int = 4,
                 text_tokens: int | None = None, adapter_every_step: bool = False) -> float:
    """FLOPs of a whole decode: ``steps`` calls, the adapter trunk once (every step if
    ``adapter_every_step``, as upstream does)."""
    f = forward_flops(cfg, height, width, batch, text_tokens)
    trunk = f.pop("adapter.trunk")
    return steps * (sum(f.values()) + (trunk if adapter_every_step else 0.0)) + (
        0.0 if adapter_every_step else trunk)
