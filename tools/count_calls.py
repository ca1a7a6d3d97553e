"""How many distinct product functions one whole-image PiD Decode Latent decode runs.

Loads the pack as ComfyUI does (its root ``__init__.py`` as a package), loads a tiny random FLUX
v1.5 checkpoint with PiD Load Model (not counted), then counts with ``sys.setprofile`` every
distinct function of ``pid_core/`` and ``nodes/`` entered during one PiD Decode Latent call
(a 1x16x4x4 latent at sigma 0.3, 4 steps, a stand-in text encoder).

    python tools/count_calls.py            # the count and the files
    python tools/count_calls.py --list     # also every function
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from pack_import import import_pack

ROOT = Path(__file__).resolve().parents[1]
PACK = "pid_pack_under_count"


class StandInEncoder:
    """A tiny deterministic text encoder with the TextEncoderLike interface."""

    bos_id, pad_id = 2, 0

    def tokenize(self, text):
        return [3 + (ord(c) % 50) for c in text[:400]]

    def hidden_states(self, ids, mask):
        import torch
        return torch.sin(ids[..., None].float() * torch.linspace(0.01, 1.0, 2304))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print every function counted")
    args = ap.parse_args()
    import torch
    from safetensors.torch import save_file

    pack = import_pack(PACK)
    rw = importlib.import_module(f"{PACK}.pid_core.network.random_weights")
    folders = importlib.import_module(f"{PACK}.nodes.model_folders")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pid").mkdir()
        save_file(rw.random_state_dict(rw.tiny_config("flux_v1.5"), seed=1),
                  str(Path(tmp) / "pid" / "pid_flux_v1.5.safetensors"))
        os.environ[folders.ENV_MODELS_DIR] = tmp
        pid, _ = pack.NODE_CLASS_MAPPINGS["PiD_LoadModel"]().load(
            "pid_flux_v1.5.safetensors", "none", "fp32", clip=StandInEncoder())
        latent = {"samples": torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))}
        node = pack.NODE_CLASS_MAPPINGS["PiD_DecodeLatent"]()
        seen = set()
        roots = (str(ROOT / "pid_core"), str(ROOT / "nodes"))

        def profile(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.startswith(roots):
                code = frame.f_code
                seen.add((os.path.relpath(code.co_filename, ROOT), code.co_firstlineno, code.co_qualname))

        sys.setprofile(profile)
        try:
            node.decode(pid, latent, 0.3, "a red fox", 0, 4, latent_format="flux")
        finally:
            sys.setprofile(None)
    files = sorted({f for f, _, _ in seen})
    print(f"{len(seen)} distinct product functions in {len(files)} files ran for one whole-image "
          f"PiD Decode Latent decode")
    for f in files:
        print(f"  {f}: {sum(1 for g, _, _ in seen if g == f)}")
    if args.list:
        for f, line, name in sorted(seen):
            print(f"    {f}:{line} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
