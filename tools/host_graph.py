"""Edits an API-format prompt (converted from a shipped UI workflow) for the host check.

* `shrink`: sets every empty-latent node's (and Flux2Scheduler's) width/height to a small size so
  a CPU samples it in seconds; nothing else changes (schedules that do not depend on resolution
  are untouched, and Flux2Scheduler sees the same size as the latent);
* `add_probes`: adds one PiDHostProbe (tools/host_probe) per PiD Stop Sigma, fed by exactly the
  inputs of the sampler whose latent PiD decodes (the same links or values), PiD Stop Sigma's
  output and that sampler's LATENT output. The shipped workflow files are not touched.
"""

from __future__ import annotations

EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyFlux2LatentImage", "EmptyHunyuanLatentVideo")


def shrink(api: dict, size: int) -> list:
    changed = []
    for nid, node in api.items():
        if node["class_type"] in EMPTY_LATENTS + ("Flux2Scheduler",):
            for key in ("width", "height"):
                if isinstance(node["inputs"].get(key), int):
                    node["inputs"][key] = size
            changed.append(f"{node['class_type']}#{nid}")
    return changed


def _link_source(value):
    return value[0] if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) else None


def add_probes(api: dict) -> list:
    """Returns the ids of the probe nodes added (one per PiD_StopSigma that feeds a decode)."""
    added = []
    decodes = [n for n in api.values() if n["class_type"] == "PiD_DecodeLatent"]
    for sid, stop in list(api.items()):
        if stop["class_type"] != "PiD_StopSigma":
            continue
        for dec in decodes:
            if _link_source(dec["inputs"].get("sigma")) != sid:
                continue
            ks_id = _link_source(dec["inputs"].get("latent"))
            sampler = api.get(ks_id, {})
            inputs = {"pid_sigma": [sid, 0], "latent": [ks_id, 0]}
            if sampler.get("class_type") == "KSamplerAdvanced":
                for key in ("model", "sampler_name", "scheduler", "steps", "end_at_step"):
                    inputs[key] = sampler["inputs"][key]
            elif sampler.get("class_type") == "SamplerCustomAdvanced":
                inputs["sigmas"] = sampler["inputs"]["sigmas"]
            else:
                continue
            pid = str(max(int(k) for k in api if k.isdigit()) + 1 + len(added))
            api[pid] = {"class_type": "PiDHostProbe", "inputs": inputs, "_meta": {"title": "host probe"}}
            added.append(pid)
    return added


def _value(api: dict, v):
    src = _link_source(v)
    return api[src]["inputs"].get("value") if src is not None else v


def _set(api: dict, node: dict, key: str, value) -> None:
    src = _link_source(node["inputs"][key])
    if src is not None:  # a shared Primitive node feeds it (and everything else it feeds)
        api[src]["inputs"]["value"] = value
    else:
        node["inputs"][key] = value


def early_stop_variant(api: dict, before_end: int = 3):
    """For a workflow whose KSamplerAdvanced runs to the end (sigma 0): a copy stopped
    `before_end` steps early, changed in the same place the user would change it (the shared
    'Stop at step' value, or both nodes' end_at_step), with its label; None otherwise."""
    import copy

    out = copy.deepcopy(api)
    label = None
    for node in out.values():
        if node["class_type"] != "KSamplerAdvanced":
            continue
        steps, end = _value(out, node["inputs"]["steps"]), _value(out, node["inputs"]["end_at_step"])
        if not (isinstance(steps, int) and isinstance(end, int)) or end < steps or steps <= before_end:
            return None
        stop = steps - before_end
        _set(out, node, "end_at_step", stop)
        for other in out.values():
            if other["class_type"] == "PiD_StopSigma" and other["inputs"].get("model") == node["inputs"]["model"]:
                _set(out, other, "end_at_step", stop)
        label = f"stop {stop}/{steps}"
    return (out, label) if label else None


def node_types(ui: dict) -> set:
    return {n["type"] for n in ui["nodes"] if n["type"] not in ("Note", "MarkdownNote")}


def combo_values(ui: dict) -> list:
    """(node type, widget index, value) of string widget values, to check against /object_info."""
    out = []
    for n in ui["nodes"]:
        for i, v in enumerate(n.get("widgets_values") or []):
            if isinstance(v, str):
                out.append((n["type"], i, v))
    return out
