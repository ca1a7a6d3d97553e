"""torch.distributed on the CPU (gloo, 2 processes): a sharded batch gives the images of one
process, a tile-parallel decode gives the single-process tiled image bit for bit, and rank 0's
summary lists the failures of every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from test_batch import E, batch_argv, make_batch_dir, save_latent, write_manifest

from pid_core.decoding.decoder import DecodeOptions, load_decoder
from pid_core.decoding.tiling import tile_grid
from pid_core.frontends import cli, cli_io
from pid_core.frontends.batch import read_manifest
from pid_core.frontends.batch_run import run_batch
from pid_core.frontends.distributed import (
    TileParallel,
    World,
    gather_to_rank0,
    init_from_env,
    shard,
    shared_plan,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TILE, OVERLAP, SEED = (80, 80), 32, 11        # 160x160 in 3x3 tiles: 4-way overlaps, an uneven last round
DEFAULTS = {"latent_format": "flux"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tensor(path, image, made_with):
    torch.save(image.clone(), path)


def _worker(rank: int, size: int, port: int, d: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = init_from_env("cpu")
    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    report = run_batch(dec, read_manifest(d / "m.jsonl", DEFAULTS), d / "out2", world=world, progress=False,
                       write_image=save_tensor)
    reports = gather_to_rank0(report, world)
    z, y = cli_io.read_latent(str(d / "big.latent")), cli_io.read_text_embeds(str(d / E))
    plan = shared_plan(dec, z.shape, world, tile=TILE, tile_overlap=OVERLAP)
    ticks = []
    img = dec.decode(z, 0.2, y, latent_format="flux", seed=SEED, steps=3, plan=plan, options=DecodeOptions(
        parallel=TileParallel(world), callback=lambda i, n: ticks.append((i, n))))
    torch.save({"img": img, "reports": reports, "ticks": ticks, "plan": plan}, d / f"rank{rank}.pt")
    # the command line, in the same job (it leaves the process group when done)
    assert cli.main([*decode_argv(d), "--tile-parallel", "-o", str(d / "par.png")]) == 0
    assert (d / "par.png").exists() == (rank == 0)


def decode_argv(d: Path) -> list[str]:
    return ["decode", "--checkpoint", str(d / "tiny.safetensors"), "--latent", str(d / "big.latent"),
            "--sigma", "0.2", "--text-embeds", str(d / E), "--latent-format", "flux", "--device", "cpu",
            "--dtype", "fp32", "--tile", f"{TILE[0]}x{TILE[1]}", "--tile-overlap", str(OVERLAP), "--seed",
            str(SEED), "--steps", "3"]


def test_two_processes_shard_the_batch_and_the_tiles_with_the_images_of_one(tmp_path):
    d = make_batch_dir(tmp_path, latents=((1, 16, 2, 2),) * 5)
    save_latent(d / "big.latent", 1, 16, 5, 5, seed=9)
    rows = [{"latent": f"l{i}.latent", "text_embeds": E, "seed": i, "sigma": 0.1 * i} for i in range(5)]
    rows.insert(3, {"latent": "missing.latent", "text_embeds": E})     # row 4: rank 1's share
    write_manifest(d / "m.jsonl", rows)
    mp.spawn(_worker, args=(2, free_port(), d), nprocs=2)

    dec = load_decoder(str(d / "tiny.safetensors"), dtype="fp32")
    one = run_batch(dec, read_manifest(d / "m.jsonl", DEFAULTS), d / "out1", progress=False,
                    write_image=save_tensor)
    r0, r1 = torch.load(d / "rank0.pt", weights_only=False), torch.load(d / "rank1.pt", weights_only=False)
    # batch: each rank did its round-robin share; every image equals the one-process image
    shares = [rep.decoded + [f[1] for f in rep.failed] for rep in r0["reports"]]
    assert shares == [["l0.png", "l2.png", "l3.png"], ["l1.png", "l4.png", "missing"]]
    assert r0["reports"][1].failed[0][:2] == (4, "missing") and one.failed[0][:2] == (4, "missing")
    for name in one.decoded:
        assert torch.equal(torch.load(d / "out2" / name), torch.load(d / "out1" / name)), name
    # tiles: the same plan everywhere, 5 + 4 tiles per step, the single-process tiled image
    z, y = cli_io.read_latent(str(d / "big.latent")), cli_io.read_text_embeds(str(d / E))
    ref = dec.decode(z, 0.2, y, latent_format="flux", seed=SEED, steps=3,
                     plan=dec.plan(z.shape, tile=TILE, tile_overlap=OVERLAP))
    assert r0["plan"] == r1["plan"] and r0["plan"].n_tiles == 9
    assert r0["ticks"][-1] == (15, 15) and r1["ticks"][-1] == (12, 12)
    assert torch.equal(r0["img"], ref) and torch.equal(r1["img"], ref)
    assert cli.main([*decode_argv(d), "-o", str(d / "one.png")]) == 0
    pixels = [Image.open(d / f).tobytes() for f in ("par.png", "one.png")]
    assert pixels[0] == pixels[1]                                # the PNGs differ only in their command


def test_torchrun_decode_batch_summary_on_rank0(tmp_path):
    """The real command line under torchrun: failures of both ranks reach rank 0's summary and
    the outputs and done records are those of a one-process run."""
    d = make_batch_dir(tmp_path, latents=((1, 16, 2, 2),) * 3)
    rows = [{"latent": "l0.latent", "text_embeds": E}, {"latent": "nope.latent", "text_embeds": E},
            {"latent": "l1.latent", "text_embeds": E, "sigma": -2}, {"latent": "l2.latent", "prompt": "x"}]
    rows.append({"latent": "l1.latent", "text_embeds": E, "seed": 4, "output": "l1b"})
    manifest = write_manifest(d / "m.jsonl", rows)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "pid_core"]
    two = subprocess.run(run + batch_argv(d, manifest, d / "out2"), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert "5 items on 2 process(es): 2 images decoded, 0 already done, 3 failed" in two.stdout, two.stderr
    assert [ln.split()[2] for ln in two.stdout.splitlines()[1:]] == ["2", "3", "4"]   # ranks 1, 0, 1
    assert cli.main(batch_argv(d, manifest, d / "out1")) == 1
    for name in ("l0.png", "l1b.png"):
        assert (d / "out2" / name).read_bytes() == (d / "out1" / name).read_bytes()
    records = [json.loads((d / "out2" / n).read_text())["key"] for n in ("l0.pid.json", "l1b.pid.json")]
    assert records == [json.loads((d / "out1" / n).read_text())["key"] for n in ("l0.pid.json", "l1b.pid.json")]


def test_world_without_torchrun_and_round_robin_shards(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    world = init_from_env("cpu")
    assert world == World() and not world.distributed and gather_to_rank0(7, world) == [7]
    items = list(range(7))
    parts = [shard(items, World(rank=r, size=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and sorted(sum(parts, [])) == items
    owns = [[j for j in range(9) if TileParallel(World(rank=r, size=2)).owns(j)] for r in range(2)]
    assert owns == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    assert len(tile_grid(160, 160, *TILE, OVERLAP)) == 9
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not a whole number"):
        init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs cuda:0, but this machine has 0 CUDA device"):
            init_from_env("cuda")
