"""PiD host probe: a tiny node pack loaded ONLY by tools/host_e2e.py (never shipped, never in a workflow).

* ``PiDHostProbe`` (output node): given what a KSamplerAdvanced was given (MODEL, sampler, scheduler,
  steps, end_at_step), asks ComfyUI's own ``comfy.samplers.KSampler(...).sigmas``, truncates them
  exactly as ``KSampler.sample(last_step=end_at_step)`` does, and reports the sigma the sampler
  stopped at next to the sigma PiD Stop Sigma returned. With ``sigmas`` (a custom sampler's SIGMAS)
  the stop is their last entry, where SamplerCustomAdvanced stops. It also fingerprints the LATENT
  the sampler returned.
* On every submitted prompt it wraps the registered ``PiD_DecodeLatent`` function once, so the
  ``latent`` and ``sigma`` the decode node actually receives are fingerprinted too.

Both records are served at ``GET /pid_probe/records`` (``POST /pid_probe/clear`` empties them).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json

import torch

RECORDS: list = []


def fingerprint(latent) -> dict:
    samples = latent["samples"] if isinstance(latent, dict) else latent
    t = samples.detach().to("cpu", torch.float32).contiguous()
    return {"shape": list(t.shape), "dtype": str(samples.dtype), "sum": float(t.double().sum()),
            "abs_sum": float(t.double().abs().sum()), "finite": bool(torch.isfinite(t).all()),
            "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]}


def sampler_stop_sigmas(model, sampler_name, scheduler, steps, end_at_step):
    import comfy.samplers

    ks = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                 scheduler=scheduler, denoise=1.0, model_options=model.model_options)
    sigmas = ks.sigmas
    if end_at_step < len(sigmas) - 1:  # KSampler.sample(last_step=end_at_step), leftover noise kept
        sigmas = sigmas[: end_at_step + 1]
    return ks.sigmas, sigmas


class PiDHostProbe:
    CATEGORY = "_for_testing/pid_probe"
    FUNCTION = "probe"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pid_sigma": ("FLOAT", {"forceInput": True})},
                "optional": {"model": ("MODEL",), "sampler_name": ("STRING", {"default": ""}),
                             "scheduler": ("STRING", {"default": ""}),
                             "steps": ("INT", {"default": 0, "min": 0, "max": 10000}),
                             "end_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
                             "sigmas": ("SIGMAS",), "latent": ("LATENT",)}}

    def probe(self, pid_sigma, model=None, sampler_name="", scheduler="", steps=0, end_at_step=0,
              sigmas=None, latent=None):
        rec = {"probe": "sampler", "pid_sigma": float(pid_sigma)}
        if sigmas is not None:
            ran = sigmas.detach().float().cpu()
            rec.update(source="SIGMAS", schedule=[float(s) for s in ran], sampler_sigma=float(ran[-1]))
        else:
            full, ran = sampler_stop_sigmas(model, sampler_name, scheduler, steps, end_at_step)
            sampling = model.get_model_object("model_sampling")
            rec.update(source="comfy.samplers.KSampler", schedule=[float(s) for s in full.cpu()],
                       sampler_sigma=float(ran[-1]), steps=steps, end_at_step=end_at_step,
                       model_sampling=[c.__name__ for c in type(sampling).__mro__[1:3]],
                       latent_format=type(model.get_model_object("latent_format")).__name__)
        rec["abs_diff"] = abs(rec["pid_sigma"] - rec["sampler_sigma"])
        if latent is not None:
            rec["latent"] = fingerprint(latent)
        RECORDS.append(rec)
        return {"ui": {"pid_probe": [json.dumps(rec)]}}


def _wrap_function(cls):
    name = getattr(cls, "FUNCTION", None) or "execute"
    static = inspect.getattr_static(cls, name)
    target = static.__func__ if isinstance(static, classmethod) else static
    if getattr(target, "_pid_probe", False):
        return

    def note(kwargs):
        rec = {"probe": "decode_input", "node": cls.__name__, "sigma": kwargs.get("sigma")}
        if kwargs.get("latent") is not None:
            rec["latent"] = fingerprint(kwargs["latent"])
        RECORDS.append(rec)

    if inspect.iscoroutinefunction(target):
        @functools.wraps(target)
        async def wrapped(*args, **kwargs):
            note(kwargs)
            return await target(*args, **kwargs)
    else:
        @functools.wraps(target)
        def wrapped(*args, **kwargs):
            note(kwargs)
            return target(*args, **kwargs)
    wrapped._pid_probe = True
    setattr(cls, name, classmethod(wrapped) if isinstance(static, classmethod) else wrapped)


def _on_prompt(json_data):
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get("PiD_DecodeLatent")
    if cls is not None:
        _wrap_function(cls)
    return json_data


def _install_routes():
    from aiohttp import web
    from server import PromptServer

    server = PromptServer.instance
    server.add_on_prompt_handler(_on_prompt)

    @server.routes.get("/pid_probe/records")
    async def records(request):
        return web.json_response(RECORDS)

    @server.routes.post("/pid_probe/clear")
    async def clear(request):
        RECORDS.clear()
        return web.json_response({"cleared": True})


_install_routes()

NODE_CLASS_MAPPINGS = {"PiDHostProbe": PiDHostProbe}
NODE_DISPLAY_NAME_MAPPINGS = {"PiDHostProbe": "PiD host probe (test only)"}
