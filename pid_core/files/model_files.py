"""The PiD files users have: the Comfy-Org repack and the official nvidia/PiD releases.

One table, used by the download, the model listing, the example workflows and the README. Every
name, size and digest was read from a public source named in the entry's ``provenance`` (keys of
``SOURCES``); nothing is guessed. A ``sha256`` is pinned only where a public source lists it; every
download is checked against the digest the hub publishes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..network.config import HF_REPO, RELEASES, WEIGHTS_LICENSE

# The public sources the entries' ``provenance`` names.
SOURCES = {
    "core-template": "ComfyUI's own PiD template utility_pid_latent_upscale_dit.json (comfyui-workflow-templates "
                     "0.11.41, pinned by ComfyUI 0.33): file names, folders and resolve/main URLs of "
                     "Comfy-Org/PixelDiT",
    "nomadoor": "nomadoor/Comfy-with-ComfyUI basic-workflows/pixeldit-pid (2026-07-29): the file list with the "
                "sizes Hugging Face shows",
    "invokeai": "invoke-ai/InvokeAI invokeai/backend/model_manager/starter_models/{flux,flux2,qwen_image,sd_3,"
                "sdxl}.py: Comfy-Org URLs (int8_convrot builds included) and the nvidia/PiD paths, pinned to "
                "Comfy-Org/PixelDiT commit f1aa9118",
    "comfycolab": "the ComfyColab-PiD catalogue (Comfy-Org/PixelDiT at commit 70e1298e): byte sizes and sha256 "
                  "of the v1.5 bf16 files and the Gemma bf16 encoder",
    "comfyui-tpu": "PhoenixCreation/ComfyUI-TPU deployment/model_manifest.json and docs/architecture/proposed/"
                   "003-pid-upscaler-bf16-support.md: digests and sizes of the v1.5 FLUX.1 bf16 and Gemma bf16 "
                   "files, measured on downloaded copies",
    "cubric": "a model catalogue mirroring Comfy-Org/PixelDiT: sha256 of four v1 bf16 files",
    "merserk": "Merserk/ComfyUI-PiD README and backend: the *_mxfp8 and _2606 names",
    "manifest-test": "a public models manifest test naming the Gemma fp8 and FLUX.2 mxfp8 files with the sizes "
                     "the hub shows",
}
REPACK_REPO = "Comfy-Org/PixelDiT"
GEMMA_LICENSE = "Gemma Terms of Use (Google)"
REPACK_LICENSE = WEIGHTS_LICENSE + "; Comfy-Org repack of the same weights"


@dataclass(frozen=True)
class ModelFile:
    """One downloadable (or merely known) file."""

    name: str                 # file name in the ComfyUI folder (what users and workflows see)
    repo: str                 # Hugging Face repository
    path: str                 # path inside the repository
    folder: str               # ComfyUI models/ folder it belongs in
    kind: str                 # "decoder" | "text_encoder"
    ldm: str                  # which LDM's latents it decodes (decoders) / what uses it
    release: str | None       # the pid_core.config release it equals (None: not in RELEASES)
    layout: str               # "bf16" | "mxfp8" | "int8_convrot" | "fp8_scaled"
    size: str                 # approximate size for display
    licence: str
    provenance: str
    size_bytes: int | None = None   # exact size, only where a public source gives it
    sha256: str | None = None       # pinned digest, only where a public source lists it
    current: bool = True            # False: superseded upstream (kept so old files are recognised)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/blob/main/{self.path}"

    @property
    def quantised(self) -> bool:
        return self.layout in ("mxfp8", "int8_convrot")

    @property
    def downloadable(self) -> bool:
        """Offered by PiD Load Model's download: current files this pack loads today."""
        return self.current and not self.quantised


def _repack(name, ldm, release, layout, size, provenance, *, size_bytes=None, sha256=None,
            current=True, folder="diffusion_models"):
    kind = "text_encoder" if folder == "text_encoders" else "decoder"
    return ModelFile(name=name, repo=REPACK_REPO, path=f"{folder}/{name}", folder=folder,
                     kind=kind, ldm=ldm, release=release, layout=layout, size=size,
                     licence=GEMMA_LICENSE if kind == "text_encoder" else REPACK_LICENSE,
                     provenance=provenance, size_bytes=size_bytes, sha256=sha256, current=current)


_F1, _F2, _SD3 = "FLUX.1 / Z-Image", "FLUX.2 / klein", "SD3 / SD3.5"
_V1_2KTO4K_OLD = "v1 2kto4k, superseded upstream by v1.5 (nv-tlabs/PiD @da8977e)"

REPACK_FILES = (
    _repack("pid_flux1_512_to_2048_4step_bf16.safetensors", _F1 + ", 512 px -> 2048", "flux_2k",
            "bf16", "2.72 GB", "core-template (name, folder); nomadoor (size)"),
    _repack("pid_sd3_512_to_2048_4step_bf16.safetensors", _SD3 + ", 512 px -> 2048", "sd3_2k",
            "bf16", "unknown", "core-template (name, folder); no public size"),
    _repack("pid_sd3_1024_to_4096_4step_bf16.safetensors", _SD3 + ", 1024 px -> 4096",
            "sd3_2kto4k", "bf16", "2.72 GB", "core-template (name, folder); cubric (size; sha256 "
            "not pinned: single mirror source)"),
    _repack("pid_sdxl_1024_to_4096_4step_bf16.safetensors", "SDXL, 1024 px -> 4096",
            "sdxl_2kto4k", "bf16", "2.72 GB", "nomadoor (name, size); cubric (sha256, not pinned: "
            "single mirror source)"),
    _repack("pid_flux2_512_to_2048_4step_bf16.safetensors", _F2 + ", 512 px -> 2048", "flux2_2k",
            "bf16", "2.73 GB", "core-template (name, folder); nomadoor (size)"),
    _repack("pid_1.5_flux1_1024_to_4096_4step_bf16.safetensors", _F1 + ", 1024 px -> 4096",
            "flux_v1.5", "bf16", "2.80 GB", "invokeai + nomadoor (name); comfycolab and "
            "comfyui-tpu (size, sha256: both agree)", size_bytes=2800450070,
            sha256="18931256e97822dc31db10b1e7399c73e7ee2c897f6d461eb1d1cf5e1d2de049"),
    _repack("pid_1.5_qwenimage_1024_to_4096_4step_bf16.safetensors",
            "Qwen-Image / -2512, 1024 px -> 4096", "qwenimage_v1.5", "bf16", "2.80 GB",
            "invokeai + nomadoor (name); comfycolab (size, sha256)", size_bytes=2800450070,
            sha256="6abdd5377db01d4a9d8b013a2853c72d1673c6a6316a2a821345d92800277325"),
    _repack("pid_1.5_flux2_1024_to_4096_4step_bf16.safetensors", _F2 + ", 1024 px -> 4096",
            "flux2_v1.5", "bf16", "2.80 GB", "invokeai + nomadoor (name); comfycolab (size, "
            "sha256)", size_bytes=2800744982,
            sha256="dddaf186c7bb9f73b873a7f2b59235eaea5eae9ec7731c0ec40d49d3287eee14"),
    # quantised builds: listed and recognised; loaded only through ComfyUI's quantised ops
    _repack("pid_1.5_flux1_1024_to_4096_4step_int8_convrot.safetensors", _F1 + ", 1024 px -> 4096",
            "flux_v1.5", "int8_convrot", "1.58 GB", "invokeai (name); a public catalogue gives "
            "1,584,813,952 bytes", size_bytes=1584813952),
    _repack("pid_1.5_qwenimage_1024_to_4096_4step_int8_convrot.safetensors",
            "Qwen-Image / -2512, 1024 px -> 4096", "qwenimage_v1.5", "int8_convrot", "~1.6 GB",
            "invokeai (name, '~1.6GB')"),
    _repack("pid_1.5_flux2_1024_to_4096_4step_int8_convrot.safetensors", _F2 + ", 1024 px -> 4096",
            "flux2_v1.5", "int8_convrot", "~1.6 GB", "invokeai (name, '~1.6GB')"),
    _repack("pid_flux1_512_to_2048_4step_mxfp8.safetensors", _F1 + ", 512 px -> 2048", "flux_2k",
            "mxfp8", "unknown", "merserk (name); no public size"),
    _repack("pid_flux2_512_to_2048_4step_mxfp8.safetensors", _F2 + ", 512 px -> 2048", "flux2_2k",
            "mxfp8", "1.41 GB", "merserk (name); manifest-test (size)"),
    _repack("pid_flux1_1024_to_4096_4step_mxfp8.safetensors", _F1 + ", 1024 px -> 4096 (v1)", None,
            "mxfp8", "unknown", "merserk (name); " + _V1_2KTO4K_OLD, current=False),
    _repack("pid_flux2_1024_to_4096_4step_mxfp8.safetensors", _F2 + ", 1024 px -> 4096 (v1)", None,
            "mxfp8", "1.41 GB", "merserk (name); manifest-test (size); " + _V1_2KTO4K_OLD,
            current=False),
    # v1 2kto4k builds NVIDIA replaced by v1.5 (nvidia/PiD checkpoints_deprecated/)
    _repack("pid_flux1_1024_to_4096_4step_bf16.safetensors", _F1 + ", 1024 px -> 4096 (v1)", None,
            "bf16", "2.72 GB", "core-template (name: the template's own decoder); cubric (size); "
            + _V1_2KTO4K_OLD, current=False),
    _repack("pid_flux2_1024_to_4096_4step_bf16.safetensors", _F2 + ", 1024 px -> 4096 (v1)", None,
            "bf16", "unknown", "core-template (name); " + _V1_2KTO4K_OLD, current=False),
    _repack("pid_flux2_1024_to_4096_4step_2606_bf16.safetensors", _F2 + ", 1024 px -> 4096 (v1)",
            None, "bf16", "unknown", "merserk (name: the _2606 refresh of the v1 FLUX.2 2kto4k); "
            + _V1_2KTO4K_OLD, current=False),
    _repack("pid_qwenimage_1024_to_4096_4step_bf16.safetensors",
            "Qwen-Image, 1024 px -> 4096 (v1)", None, "bf16", "2.72 GB",
            "merserk (name); cubric (size); " + _V1_2KTO4K_OLD, current=False),
    # the Gemma-2-2B-it prompt encoder every PiD decoder needs
    _repack("gemma_2_2b_it_elm_bf16.safetensors", "every PiD decoder (prompt encoder)", None,
            "bf16", "5.23 GB", "core-template (name, folder); comfycolab and comfyui-tpu (size, "
            "sha256: both agree)", size_bytes=5232958571,
            sha256="e7ae59c203c392db4aa4e27783e924ec3225eb563392260cf747e1130ffcdb88",
            folder="text_encoders"),
    _repack("gemma_2_2b_it_elm_fp8_scaled.safetensors", "every PiD decoder (prompt encoder)", None,
            "fp8_scaled", "2.44 GB", "core-template (name, folder: the template's own encoder); "
            "manifest-test (size)", folder="text_encoders"),
)

_OFFICIAL_SIZE = {"v1": "~2.7 GB", "v1.5": "~2.8 GB"}  # bf16: parameter counts (memory.param_count) x 2 B
_OFFICIAL_LDM = {"flux_2k": _F1 + ", 512 px -> 2048", "sd3_2k": _SD3 + ", 512 px -> 2048",
                 "sd3_2kto4k": _SD3 + ", 1024 px -> 4096", "sdxl_2kto4k": "SDXL, 1024 px -> 4096",
                 "flux2_2k": _F2 + ", 512 px -> 2048", "dinov2_2k": "DINOv2 RAE features (CLI)",
                 "siglip_2k": "SigLIP RAE features (CLI)",
                 "flux_v1.5": _F1 + ", 1024 px -> 4096",
                 "qwenimage_v1.5": "Qwen-Image / -2512, 1024 px -> 4096",
                 "flux2_v1.5": _F2 + ", 1024 px -> 4096"}

OFFICIAL_FILES = tuple(
    ModelFile(name=f"pid_{r.name}.pth", repo=HF_REPO,
              path=f"checkpoints/{r.hf_dir}/model_ema_bf16.pth", folder="pid", kind="decoder",
              ldm=_OFFICIAL_LDM[r.name], release=r.name, layout="bf16",
              size=_OFFICIAL_SIZE[r.version], licence=WEIGHTS_LICENSE,
              provenance="nv-tlabs/PiD @2c8814c pid/_src/inference/checkpoint_registry.py (directory); "
                         "invokeai "
                         "(same paths)")
    for r in RELEASES)

BY_NAME = {f.name: f for f in REPACK_FILES + OFFICIAL_FILES}
BY_RELEASE = {f.release: f for f in OFFICIAL_FILES}


def download_choices() -> list[str]:
    """What PiD Load Model's download offers: repack file names, then official release names."""
    return [f.name for f in REPACK_FILES if f.downloadable] + [r.name for r in RELEASES]


def lookup(choice: str) -> ModelFile | None:
    """The file a download choice (a repack file name or a release name) stands for."""
    return BY_RELEASE.get(choice) or BY_NAME.get(choice)


def known_file(path_or_name: str) -> ModelFile | None:
    """The table entry for a local file, matched on its base name (any sub-folder)."""
    return BY_NAME.get(path_or_name.replace("\\", "/").rsplit("/", 1)[-1])


def repack_name(release: str) -> str:
    """The Comfy-Org bf16 file name of an official release (KeyError if there is none)."""
    for f in REPACK_FILES:
        if f.release == release and f.layout == "bf16" and f.current:
            return f.name
    raise KeyError(release)
