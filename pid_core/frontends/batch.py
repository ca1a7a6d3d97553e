"""Batch items: the manifest and folder readers, each item's identity, done records, atomic writes.

A row that cannot become an item becomes an item carrying its ``error`` (reported, never stops the
batch). An item is done when its record ``<output>.pid.json`` holds its ``key`` (a SHA-256 of
everything that decides the pixels: the files' bytes, prompt, sigma, format, seed, steps, size and
decode settings) and its PNGs exist. Files are written under a temporary name and renamed over
the target, PNGs first and the record last, so a killed run never leaves a truncated file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import PiDInputError

LATENT_SUFFIXES = (".latent", ".safetensors")
RECORD_SUFFIX = ".pid.json"
FIELDS = {
    "latent": "path of a .latent (ComfyUI SaveLatent) or .safetensors latent (required)",
    "prompt": "the prompt that made the latent",
    "text_embeds": "path of a safetensors file with one [B, 300, 2304] text-feature tensor",
    "sigma": "noise level of the latent (0 = finished)",
    "latent_format": "flux, sd3, sdxl, qwenimage, flux2, normalized (default: the checkpoint's)",
    "noise_frame": "flow, comfy_flow or ve (default: ComfyUI's convention for .latent files, else flow)",
    "seed": "noise seed of this item",
    "steps": "network calls, 1..4",
    "size": "output size as \"HxW\" or [H, W] (default: the latent x the output factor)",
    "output": "output name without folder or suffix (default: the latent's file name)",
}


@dataclass(frozen=True)
class Item:
    """One decode of a batch. ``row``: its 1-based line in the manifest (or position in the folder)."""

    row: int
    name: str = ""
    latent: Path | None = None
    prompt: str | None = None
    text_embeds: Path | None = None
    sigma: object = 0.0
    latent_format: str | None = None
    noise_frame: str | None = None
    seed: object = 0
    steps: object = 4
    size: tuple[int, int] | None = None
    error: str | None = None          # set: this row could not become an item

    @property
    def text_key(self) -> str:
        """What the text features depend on (items sharing it share one encoding)."""
        return f"embeds:{self.text_embeds}" if self.text_embeds is not None else f"prompt:{self.prompt}"


def parse_size(value) -> tuple[int, int] | None:
    """``"HxW"`` or ``[H, W]`` -> (H, W); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        h, sep, w = value.lower().partition("x")
        if sep and h.strip().isdigit() and w.strip().isdigit():
            return int(h), int(w)
    elif (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise PiDInputError(f"size {value!r:.60} is not an output size; expected \"HxW\" (e.g. \"2048x2048\") "
                        f"or [H, W] in whole pixels, multiples of 16.")


def check_output_name(name) -> str:
    if (not isinstance(name, str) or not name.strip() or name.startswith(".") or len(name) > 200
            or any(c in name for c in "/\\:\0")):
        raise PiDInputError(f"output name {name!r:.60} is not a plain file name; expected a name without "
                            f"folders, ':' or a leading '.', at most 200 characters (e.g. \"cat_0001\").")
    return name


def _item(row: int, fields: dict, base: Path, defaults: dict) -> Item:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise PiDInputError(f"unknown key(s) {', '.join(map(repr, unknown))}; a row may have "
                            f"{', '.join(FIELDS)} (see decode-batch --help).")
    if not isinstance(fields.get("latent"), str) or not fields["latent"]:
        raise PiDInputError(f"the row has no \"latent\" path (got {fields.get('latent')!r:.60}); every row "
                            f"needs \"latent\": \"path/to/file.latent\".")
    for key in ("prompt", "text_embeds", "latent_format", "noise_frame"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise PiDInputError(f"\"{key}\" must be a string; got {fields[key]!r:.60}.")
    if fields.get("prompt") is not None and fields.get("text_embeds") is not None:
        raise PiDInputError("the row has both \"prompt\" and \"text_embeds\"; give one of them (the "
                            "text features come either from the prompt or from the file).")
    latent = base / fields["latent"]
    vals = {**defaults, **{k: v for k, v in fields.items() if v is not None}}
    embeds = vals.get("text_embeds") if "prompt" not in fields else None
    return Item(row=row, name=check_output_name(fields.get("output", Path(fields["latent"]).stem)),
                latent=latent, prompt=None if embeds is not None else vals.get("prompt"),
                text_embeds=None if embeds is None else base / embeds, sigma=vals.get("sigma", 0.0),
                latent_format=vals.get("latent_format"), noise_frame=vals.get("noise_frame"),
                seed=vals.get("seed", 0),
                steps=vals.get("steps", 4), size=parse_size(vals.get("size")))


def _unique_names(items: list[Item]) -> list[Item]:
    """The second and later rows writing the same output name become errors."""
    seen: dict[str, int] = {}
    out = []
    for it in items:
        if it.error is None and it.name in seen:
            it = replace(it, error=f"PiDInputError: output name '{it.name}' is already used by row "
                                   f"{seen[it.name]}; give this row its own \"output\" name.")
        elif it.error is None:
            seen[it.name] = it.row
        out.append(it)
    return out


def read_manifest(path, defaults: dict | None = None) -> list[Item]:
    """Items of a JSON-lines manifest; relative paths are relative to the manifest's folder.

    ``defaults``: values for keys a row leaves out (the CLI's --sigma, --seed, …). Blank lines
    and lines starting with ``#`` are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise PiDInputError(f"manifest '{p}' does not exist; expected a JSON-lines file with one object "
                            f"per line, e.g. {{\"latent\": \"a.latent\", \"prompt\": \"a cat\", \"sigma\": 0}}.")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PiDInputError(f"line is not valid JSON ({exc.msg} at column {exc.colno}); each line "
                                    f"must be one JSON object, e.g. {{\"latent\": \"a.latent\"}}.") from None
            if not isinstance(fields, dict):
                raise PiDInputError(f"line holds a JSON {type(fields).__name__}, not an object; each line "
                                    f"must be one object such as {{\"latent\": \"a.latent\"}}.")
            items.append(_item(n, fields, p.parent, defaults or {}))
        except PiDInputError as exc:
            items.append(Item(row=n, name=f"line {n}", error=f"PiDInputError: {exc}"))
    return _unique_names(items)


def scan_folder(folder, defaults: dict | None = None) -> list[Item]:
    """Items for every ``.latent`` / ``.safetensors`` file of ``folder`` (sorted by name), each
    with the prompt of the same-named ``.txt`` file beside it (else ``defaults``' prompt or
    text_embeds)."""
    d = Path(folder)
    if not d.is_dir():
        raise PiDInputError(f"input folder '{d}' does not exist or is not a folder; expected a folder of "
                            f".latent / .safetensors latents with a same-named .txt prompt beside each.")
    files = sorted(f for f in d.iterdir() if f.suffix in LATENT_SUFFIXES and f.is_file())
    items = []
    for n, f in enumerate(files, 1):
        fields: dict = {"latent": f.name}
        txt = f.with_suffix(".txt")
        try:
            if txt.is_file():
                fields["prompt"] = txt.read_text(encoding="utf-8").rstrip("\r\n")
            elif not (defaults or {}).get("prompt") and not (defaults or {}).get("text_embeds"):
                raise PiDInputError(f"no prompt for '{f.name}': expected '{txt.name}' beside it (the "
                                    f"prompt that made the latent), or pass --prompt / --text-embeds.")
            items.append(_item(n, fields, d, defaults or {}))
        except (PiDInputError, OSError, UnicodeDecodeError) as exc:
            items.append(Item(row=n, name=f.stem, error=f"{type(exc).__name__}: {exc}"))
    return _unique_names(items)


# ------------------------------------------------------------------------- identity and records
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def existing_embeds(item: Item) -> Path:
    """The item's text-embeds file, which must exist."""
    if not item.text_embeds.is_file():
        raise PiDInputError(f"text-embeds file '{item.text_embeds}' does not exist; give the path of a "
                            f"safetensors file saved from pid_core.text, or a \"prompt\".")
    return item.text_embeds


def item_key(item: Item, settings: dict) -> str:
    """SHA-256 of what decides the item's pixels (see the module doc). Reads its files."""
    text = (["embeds", file_digest(existing_embeds(item))] if item.text_embeds is not None
            else ["prompt", item.prompt])
    facts = {"latent": file_digest(item.latent), "text": text, "sigma": item.sigma,
             "latent_format": item.latent_format, "noise_frame": item.noise_frame, "seed": item.seed,
             "steps": item.steps,
             "size": item.size, "settings": settings}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def output_names(name: str, batch: int) -> list[str]:
    """PNG names of an item whose latent has ``batch`` images (``name.png`` or ``name_<b>.png``)."""
    return [f"{name}.png"] if batch == 1 else [f"{name}_{b}.png" for b in range(batch)]


def is_done(out_dir: Path, item: Item, key: str) -> bool:
    """The item's record holds ``key`` and all the PNGs it lists exist (non-empty)."""
    try:
        record = json.loads((out_dir / f"{item.name}{RECORD_SUFFIX}").read_text())
        return (record.get("key") == key and bool(record.get("outputs"))
                and all((out_dir / o).is_file() and (out_dir / o).stat().st_size > 0
                        for o in record["outputs"]))
    except (OSError, ValueError, AttributeError, TypeError):
        return False   # no record, or a damaged one: decode again


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, flush it to disk, rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(out_dir: Path, names: Iterable[str]) -> None:
    """Temporaries of these outputs left by a killed run (any process id)."""
    for name in names:
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def write_record(out_dir: Path, item: Item, key: str, outputs: list[str], seconds: float) -> None:
    record = {"key": key, "outputs": outputs, "row": item.row, "latent": str(item.latent),
              "sigma": item.sigma, "seed": item.seed, "steps": item.steps, "seconds": round(seconds, 3)}
    path = out_dir / f"{item.name}{RECORD_SUFFIX}"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, default=str) + "\n"))
