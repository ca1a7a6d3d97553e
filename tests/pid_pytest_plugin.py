"""pytest plugin (pytest.ini ``-p``): the repository root is collected as a folder, not a package.

The root ``__init__.py`` is ComfyUI's entry point: ComfyUI imports it under the pack's folder
name (``custom_nodes/ComfyUI-PiD``), which is often not a valid module name. pytest would import
it as a package of that name and fail; as a plain folder the suite runs in a clone of any name.
The node tests import the pack as ComfyUI does (``node_helpers.load_pack``).
"""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if path == parent.config.rootpath:
        return pytest.Dir.from_parent(parent, path=path)
    return None
