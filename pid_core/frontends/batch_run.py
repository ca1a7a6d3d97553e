"""Running a batch of items (``batch.Item``) with one loaded decoder, on one process or many.

``run_batch`` takes this process's share of the items (``distributed.shard``: round-robin by row),
groups them by prompt so each distinct prompt is encoded once (``TextFeatures``), skips the ones
already finished (``batch.is_done``), decodes the rest one by one and writes each result
atomically. A failing item (missing file, wrong channels, NaN, bad sigma…) is logged and
recorded in the returned ``Report`` and the batch goes on; ``merge_reports`` combines the
reports of all processes for rank 0's summary. Progress is a tqdm bar on rank 0 when tqdm is
installed and stderr is a terminal, else a log line per item.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PiDInputError
from .batch import (
    RECORD_SUFFIX,
    Item,
    atomic_write,
    existing_embeds,
    is_done,
    item_key,
    output_names,
    remove_stale_temporaries,
    write_record,
)
from .distributed import World, shard

log = logging.getLogger(__name__)

# Distinct text features kept in memory at once (items are grouped by prompt, so one would do;
# a few more cost 2.7 MB each and spare re-encoding when groups interleave).
TEXT_CACHE_SIZE = 8


@dataclass
class Report:
    """What one process (or, merged, the whole job) did: output names, and failures as
    ``(row, name, "ErrorType: message")``."""

    decoded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    seconds: float = 0.0
    prompts_encoded: int = 0

    @property
    def total(self) -> int:
        return len(self.decoded) + len(self.skipped) + len(self.failed)


def merge_reports(reports: list[Report]) -> Report:
    out = Report(seconds=max((r.seconds for r in reports), default=0.0))
    for r in reports:
        out.decoded += r.decoded
        out.skipped += r.skipped
        out.failed += r.failed
        out.prompts_encoded += r.prompts_encoded
    out.failed.sort()
    return out


class TextFeatures:
    """Text features per item: read from its text-embeds file, or its prompt encoded with the
    encoder ``make_encoder()`` builds on first need (so a batch of embeds files never loads Gemma)."""

    def __init__(self, make_encoder: Callable[[], object] | None = None):
        self.make_encoder, self.encoder = make_encoder, None
        self.cache: OrderedDict = OrderedDict()
        self.encoded = 0

    def get(self, item: Item):
        from ..text.recipe import encode_captions
        from .cli_io import read_text_embeds
        key = item.text_key
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        if item.text_embeds is not None:
            feats = read_text_embeds(str(existing_embeds(item)))
        elif item.prompt is None:
            raise PiDInputError("the item has neither \"prompt\" nor \"text_embeds\"; PiD needs the prompt "
                                "that made the latent. Add one to the row, or pass --prompt / --text-embeds.")
        else:
            if self.encoder is None:
                if self.make_encoder is None:
                    raise PiDInputError("the item has a prompt but decode-batch got no --text-encoder DIR (a "
                                        "Gemma-2-2B-it folder for transformers); pass it, or give "
                                        "\"text_embeds\" files instead of prompts.")
                self.encoder = self.make_encoder()
            feats = encode_captions([item.prompt], self.encoder).cpu()
            self.encoded += 1
        self.cache[key] = feats
        while len(self.cache) > TEXT_CACHE_SIZE:
            self.cache.popitem(last=False)
        return feats


class Progress:
    """items/s and ETA: a tqdm bar (``show`` and a terminal), else a log line per item."""

    def __init__(self, total: int, show: bool, desc: str):
        self.total, self.show, self.n, self.t0, self.bar = total, show, 0, time.monotonic(), None
        if show and total and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                from tqdm.contrib.logging import logging_redirect_tqdm
            except ImportError:   # tqdm is optional: the log lines below say the same
                return
            self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)
            self._logs = logging_redirect_tqdm()   # log records above the bar, not through it
            self._logs.__enter__()

    def update(self, failed: int) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix(failed=failed, refresh=False)
            self.bar.update(1)
            return
        rate = self.n / max(time.monotonic() - self.t0, 1e-9)
        log.log(logging.INFO if self.show else logging.DEBUG, "%d/%d items (%.2f items/s, ETA %.0f s, "
                "%d failed)", self.n, self.total, rate, (self.total - self.n) / rate, failed)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log.error("%s", message)

    def close(self) -> None:
        if self.bar is not None:
            self._logs.__exit__(None, None, None)
            self.bar.close()


def run_batch(decoder, items: list[Item], out_dir, *, world: World | None = None,
              text: TextFeatures | None = None, settings: dict | None = None, tile=None,
              tile_overlap: int | None = None, progress: bool = True,
              write_image: Callable | None = None) -> Report:
    """Decode this process's share of ``items`` into ``out_dir``; returns its ``Report``.

    ``settings``: decode settings that change the pixels (checkpoint, dtype, tiles…), part of
    each item's key. ``write_image(path, image [3, H, W] in [0, 1], made_with)`` writes one output
    with the parameters that made it (default: ``cli_io.write_png``, which stores them in the PNG).
    """
    from ..decoding.decoder import DecodeOptions
    from .cli_io import file_noise_frame, fix_hint, read_latent, write_png
    world = world or World()
    text = text or TextFeatures()
    write_image = write_image or write_png
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = shard(items, world)
    first: dict[str, int] = {}
    for it in mine:
        first.setdefault(it.text_key, len(first))
    mine.sort(key=lambda it: first[it.text_key])   # stable: rows keep their order within a prompt
    report, t0 = Report(), time.monotonic()
    bar = Progress(len(mine), progress and world.is_main, f"rank {world.rank}" if world.distributed else "PiD")
    try:
        for item in mine:
            try:
                if item.error is not None:
                    raise _RowError(item.error)
                latent = read_latent(str(item.latent))
                key = item_key(item, settings or {})
                names = output_names(item.name, latent.shape[0])
                if is_done(out, item, key):
                    report.skipped += names
                else:
                    start = time.monotonic()
                    frame = file_noise_frame(item.latent, decoder, item.latent_format, item.noise_frame)
                    img = decoder.decode(latent, item.sigma, text.get(item), seed=item.seed, steps=item.steps,
                                         latent_format=item.latent_format,
                                         plan=decoder.plan(latent.shape, item.size, tile, tile_overlap),
                                         options=DecodeOptions(noise_frame=frame))
                    remove_stale_temporaries(out, [*names, item.name + RECORD_SUFFIX])
                    made_with = {**(settings or {}), "latent": str(item.latent), "prompt": item.prompt,
                                 "text_embeds": item.text_embeds, "sigma": item.sigma, "seed": item.seed,
                                 "steps": item.steps, "size": [img.shape[-2], img.shape[-1]],
                                 "latent_format": item.latent_format, "noise_frame": item.noise_frame,
                                 "manifest_row": item.row}
                    for b, name in enumerate(names):
                        atomic_write(out / name, lambda tmp: write_image(str(tmp), img[b].cpu(),
                                                                         {**made_with, "batch_index": b}))
                    write_record(out, item, key, names, time.monotonic() - start)
                    report.decoded += names
            except Exception as exc:   # one bad item never stops the batch
                reason = str(exc) if isinstance(exc, _RowError) else f"{type(exc).__name__}: {exc}{fix_hint(exc, True)}"
                report.failed.append((item.row, item.name, reason))
                bar.write(f"row {item.row} ({item.name}) failed: {reason}")
                log.debug("row %d failed", item.row, exc_info=not isinstance(exc, (_RowError, PiDInputError)))
            bar.update(len(report.failed))
    finally:
        bar.close()
    report.seconds, report.prompts_encoded = time.monotonic() - t0, text.encoded
    return report


class _RowError(Exception):
    """A row that could not become an item (its message is already 'Type: text')."""
