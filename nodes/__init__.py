"""ComfyUI glue for pid_core: one node per module, ComfyUI services through ``host``.

The node classes are registered by the pack's root ``__init__.py``; nothing is imported here so
that ``host`` can register the model folder before any node module builds its input lists.
"""
