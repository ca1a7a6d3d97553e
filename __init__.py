"""ComfyUI-PiD: NVIDIA's PiD pixel diffusion decoder as ComfyUI nodes.

The ``pid`` model folder is registered before the node modules are imported, so their input
lists already see it. Node ids are prefixed ``PiD_`` and never change once released.
"""

from .nodes import model_folders as _folders

_folders.register_model_folder()

from .nodes.decode_latent import PiDDecodeLatent  # noqa: E402
from .nodes.load_model import PiDLoadModel  # noqa: E402
from .nodes.size import PiDSize  # noqa: E402
from .nodes.stop_sigma import PiDStopSigma  # noqa: E402
from .nodes.upscale import PiDUpscale2Kto4K  # noqa: E402

NODE_CLASS_MAPPINGS = {
    "PiD_LoadModel": PiDLoadModel,
    "PiD_DecodeLatent": PiDDecodeLatent,
    "PiD_StopSigma": PiDStopSigma,
    "PiD_Upscale2Kto4K": PiDUpscale2Kto4K,
    "PiD_Size": PiDSize,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PiD_LoadModel": "PiD Load Model",
    "PiD_DecodeLatent": "PiD Decode Latent",
    "PiD_StopSigma": "PiD Stop Sigma",
    "PiD_Upscale2Kto4K": "PiD Upscale 2K→4K",
    "PiD_Size": "PiD Size",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
