"""Import this pack the way ComfyUI imports a custom node: its root ``__init__.py`` as a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_pack(name: str = "comfyui_pid_tools"):
    """The pack as package ``name`` (imported once; its modules are ``name.pid_core...``, ``name.nodes...``)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:   # a half-imported pack must not be found by the next call
            del sys.modules[name]
            raise
    return sys.modules[name]
