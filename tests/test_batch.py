"""decode-batch on one process: hostile manifests, resume, atomic writes, prompts encoded once,
folder input. The multi-process runs are in test_distributed.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pid_core.decoding.decoder import load_decoder
from pid_core.frontends import cli, cli_io
from pid_core.frontends.batch import Item, read_manifest, scan_folder
from pid_core.frontends.batch_run import TextFeatures, run_batch
from pid_core.network.random_weights import random_state_dict, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def save_latent(path: Path, *shape, seed=0, fill=None):
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if fill is not None:
        z.view(-1)[0] = fill
    save_file({"latent_tensor": z, "latent_format_version_0": torch.tensor([])}, str(path))


def make_batch_dir(d: Path, latents=((1, 16, 2, 2),) * 3) -> Path:
    """A tiny checkpoint, latents l0.. and one text-embeds file in ``d``."""
    save_file(random_state_dict(tiny_config("flux_v1.5", patch_depth=2, adapter_res_blocks=1)),
              str(d / "tiny.safetensors"))
    for i, shape in enumerate(latents):
        save_latent(d / f"l{i}.latent", *shape, seed=i)
    save_file({"t": torch.randn(1, 300, 2304, generator=torch.Generator().manual_seed(7))}, str(d / "emb.safetensors"))
    return d


def write_manifest(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def batch_argv(d: Path, manifest: Path, out: Path, *extra) -> list[str]:
    return ["decode-batch", "--checkpoint", str(d / "tiny.safetensors"), "--manifest", str(manifest),
            "--out", str(out), "--device", "cpu", "--dtype", "fp32", "--latent-format", "flux",
            "--no-progress", *extra]


class CountingEncoder:
    """A stand-in for Gemma: deterministic features per token, counts its calls."""

    bos_id, pad_id = 2, 0

    def __init__(self):
        self.calls = 0
        self.table = torch.randn(64, 2304, generator=torch.Generator().manual_seed(3))

    def tokenize(self, text):
        return [4 + ord(c) % 50 for c in text]

    def hidden_states(self, ids, mask):
        self.calls += 1
        return self.table[ids]


E = "emb.safetensors"
HOSTILE = [   # (row, words its failure line must contain)
    ({"latent": "missing.latent", "text_embeds": E}, ("missing.latent", "does not exist")),
    ({"latent": "l0.latent", "text_embeds": E, "sigm": 1}, ("unknown key", "'sigm'", "sigma")),
    ('{"latent": "l0.latent",', ("not valid JSON",)),
    ('["l0.latent"]', ("JSON list, not an object",)),
    ({"text_embeds": E}, ("no \"latent\" path",)),
    ({"latent": "sdxl.latent", "text_embeds": E}, ("LatentMismatchError", "16-channel", "4 channels")),
    ({"latent": "nan.latent", "text_embeds": E}, ("NaN",)),
    ({"latent": "l0.latent", "text_embeds": E, "sigma": -1, "output": "neg"}, (">= 0",)),
    ({"latent": "l0.latent", "text_embeds": E, "sigma": "high", "output": "str"}, ("sigma must be",)),
    ({"latent": "l0.latent", "text_embeds": E, "prompt": "x", "output": "both"}, ("both \"prompt\" and",)),
    ({"latent": "l0.latent", "text_embeds": E, "size": "big", "output": "sz"}, ("size 'big'", "HxW")),
    ({"latent": "l0.latent", "text_embeds": E, "output": "../escape"}, ("not a plain file name",)),
    ({"latent": "l0.latent", "text_embeds": E, "steps": 9, "output": "st"}, ("steps=9",)),
    ({"latent": "l0.latent", "text_embeds": E, "seed": -1, "output": "sd"}, ("seed=-1",)),
    ({"latent": "l0.latent", "text_embeds": "none.safetensors", "output": "ne"}, ("text-embeds file",)),
    ({"latent": "l0.latent", "prompt": "a cat", "output": "pr"}, ("no --text-encoder",)),
    ({"latent": "l1.latent", "text_embeds": E}, ("already used by row 2",)),
    ({"latent": "junk.latent", "text_embeds": E}, ("could not read latent file",)),
]


def test_hostile_manifest_rows_each_get_their_error_and_good_rows_decode(tmp_path, capsys):
    d = make_batch_dir(tmp_path)
    save_latent(d / "sdxl.latent", 1, 4, 2, 2)
    save_latent(d / "nan.latent", 1, 16, 2, 2, fill=float("nan"))
    (d / "junk.latent").write_bytes(b"<html>not a latent</html>")
    good = [{"latent": "l0.latent", "text_embeds": E}, {"latent": "l1.latent", "text_embeds": E, "seed": 3}]
    rows = [good[0], good[1]] + [r for r, _ in HOSTILE]
    manifest = write_manifest(d / "m.jsonl", rows)
    assert cli.main(batch_argv(d, manifest, d / "out")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{len(rows)} items on 1 process(es): 2 images decoded, 0 already done, {len(HOSTILE)} failed" in lines[0]
    failed = {int(ln.split()[2]): ln for ln in lines[1:]}
    assert sorted(failed) == list(range(3, len(rows) + 1))          # every hostile row, once
    for row, (_, words) in enumerate(HOSTILE, 3):
        for word in words:
            assert word in failed[row], (word, failed[row])
    names = sorted(p.name for p in (d / "out").iterdir())
    assert names == ["l0.pid.json", "l0.png", "l1.pid.json", "l1.png"]   # no temporaries, no stray files
    assert not (d / "escape.png").exists()


def _run(dec, items, out, **kw):
    return run_batch(dec, items, out, progress=False, settings={"ckpt": "tiny"}, **kw)


def test_rerun_skips_finished_items_and_redoes_changed_or_unfinished_ones(tmp_path):
    d = make_batch_dir(tmp_path)
    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    defaults = {"latent_format": "flux", "text_embeds": str(d / E)}
    rows = [{"latent": f"l{i}.latent"} for i in range(3)]
    manifest = write_manifest(d / "m.jsonl", rows)
    out = d / "out"
    first = _run(dec, read_manifest(manifest, defaults), out)
    assert first.decoded == ["l0.png", "l1.png", "l2.png"] and not first.failed
    stamp = {n: (out / n).stat().st_mtime_ns for n in first.decoded}
    again = _run(dec, read_manifest(manifest, defaults), out)
    assert again.skipped == first.decoded and not again.decoded
    assert all((out / n).stat().st_mtime_ns == stamp[n] for n in stamp)
    # a changed row (its seed), a PNG without its record (killed before the record), a damaged
    # record, a stale temporary: those items run again, the untouched one is kept
    write_manifest(manifest, [rows[0], {**rows[1], "seed": 9}, rows[2]])
    (out / "l2.pid.json").write_text("{not json")
    (out / ".l2.png.12345.tmp").write_bytes(b"half a png")
    third = _run(dec, read_manifest(manifest, defaults), out)
    assert third.skipped == ["l0.png"] and third.decoded == ["l1.png", "l2.png"]
    assert not list(out.glob(".*.tmp"))
    assert (out / "l0.png").stat().st_mtime_ns == stamp["l0.png"]
    (out / "l0.png").unlink()                       # a record whose PNG is gone
    assert _run(dec, read_manifest(manifest, defaults), out).decoded == ["l0.png"]


def test_a_failed_write_leaves_no_partial_output(tmp_path):
    d = make_batch_dir(tmp_path)
    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    items = read_manifest(write_manifest(d / "m.jsonl", [{"latent": "l0.latent"}, {"latent": "l1.latent"}]),
                          {"latent_format": "flux", "text_embeds": str(d / E)})

    def disk_full_on_l0(path, image, made_with):
        Path(path).write_bytes(b"\x89PNG partial")
        if ".l0.png." in path:
            raise OSError(28, "No space left on device")
        cli_io.write_png(path, image, made_with)

    report = _run(dec, items, d / "out", write_image=disk_full_on_l0)
    assert report.decoded == ["l1.png"] and "No space left" in report.failed[0][2]
    assert sorted(p.name for p in (d / "out").iterdir()) == ["l1.pid.json", "l1.png"]


def test_prompts_are_encoded_once_each_and_outputs_do_not_depend_on_the_order(tmp_path):
    d = make_batch_dir(tmp_path, latents=((1, 16, 2, 2),) * 5)
    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    prompts = ["a red fox", "a cat", "a red fox", "", "a cat"]
    rows = [{"latent": f"l{i}.latent", "prompt": p, "seed": i} for i, p in enumerate(prompts)]
    items = read_manifest(write_manifest(d / "m.jsonl", rows), {"latent_format": "flux"})
    enc = CountingEncoder()
    saved = {}
    report = _run(dec, items, d / "out", text=TextFeatures(lambda: enc),
                  write_image=lambda path, img, made: (saved.__setitem__(Path(path).name.split(".")[1], img),
                                                       cli_io.write_png(path, img, made)))
    assert enc.calls == 3 and report.prompts_encoded == 3 and len(report.decoded) == 5
    fresh = TextFeatures(lambda: CountingEncoder())
    for it in items:   # each item alone gives the same image as inside the batch
        z = cli_io.read_latent(str(it.latent))
        alone = dec.decode(z, it.sigma, fresh.get(it), seed=it.seed, latent_format="flux")
        assert torch.equal(saved[it.name], alone[0].cpu())


def test_folder_input_pairs_each_latent_with_its_txt_prompt(tmp_path):
    d = make_batch_dir(tmp_path)
    src = d / "in"
    src.mkdir()
    for i in range(3):
        (d / f"l{i}.latent").rename(src / f"l{i}.latent")
    save_file({"samples": torch.randn(1, 16, 2, 2)}, str(src / "l3.safetensors"))
    for i, text in [(0, "a red fox\n"), (1, "a cat"), (3, "")]:
        (src / f"l{i}.txt").write_text(text)
    (src / "notes.txt").write_text("not a latent")
    items = scan_folder(src, {"latent_format": "flux"})
    assert [(it.name, it.prompt, it.error is None) for it in items] == [
        ("l0", "a red fox", True), ("l1", "a cat", True), ("l2", None, False), ("l3", "", True)]
    assert "expected 'l2.txt' beside it" in items[2].error
    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    report = _run(dec, items, d / "out", text=TextFeatures(CountingEncoder))
    assert report.decoded == ["l0.png", "l1.png", "l3.png"] and [f[:2] for f in report.failed] == [(3, "l2")]
    assert scan_folder(src, {"text_embeds": str(d / E)})[2].error is None   # a default for all
    with pytest.raises(ValueError, match="input folder .* does not exist"):
        scan_folder(d / "nope")
    with pytest.raises(ValueError, match="manifest .* does not exist"):
        read_manifest(d / "nope.jsonl")
    assert Item(row=1, prompt="x").text_key != Item(row=1, text_embeds=Path("x")).text_key


def test_a_killed_run_resumes_without_redoing_finished_items(tmp_path, capsys):
    # item 0 is quick, the others take a while: the run is killed right after item 0's record
    d = make_batch_dir(tmp_path, latents=[(1, 16, 2, 2)] + [(1, 16, 8, 8)] * 3)
    manifest = write_manifest(d / "m.jsonl", [{"latent": f"l{i}.latent", "text_embeds": E} for i in range(4)])
    out = d / "out"
    argv = [sys.executable, "-m", "pid_core", *batch_argv(d, manifest, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "l0.pid.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert (out / "l0.pid.json").exists() and not (out / "l3.pid.json").exists()
    stamp = (out / "l0.png").stat().st_mtime_ns
    assert cli.main(batch_argv(d, manifest, out)) == 0          # the rerun
    assert "4 items on 1 process(es): 3 images decoded, 1 already done, 0 failed" in capsys.readouterr().out
    assert (out / "l0.png").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [f"l{i}.png" for i in range(4)]
    assert not list(out.glob(".*.tmp"))
