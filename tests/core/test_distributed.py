"""torchrun: 2 gloo ranks on the CPU write the same bytes as one process, resume per shard, and
share a sweep; plus the pure batch plan and the shard assembly (float16 overflow included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.features import torchrun
from explorer.features.store import FeatureStore
from explorer.features.torchrun import Ranks

BATCH = 8  # 40 images: batches 0..4; rank 0 gets 0, 2, 4 and rank 1 gets 1, 3


def _extract(model_dir, cache, timesteps="10,90", splits="train,test"):
    return [
        "extract",
        "--model",
        str(model_dir),
        "--dataset",
        "digits",
        "--timesteps",
        timesteps,
        "--layers",
        "all",
        "--pool",
        "2,max",
        "--splits",
        splits,
        "--limit",
        "40",
        "--batch-size",
        str(BATCH),
        "--cache-dir",
        str(cache),
    ]


def _torchrun(args, env_extra=None, timeout=240):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "explorer",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _entries(cache) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((Path(cache) / "features").glob("??/*.npy"))}


def _partials(cache) -> list[str]:
    return sorted(p.name for p in (Path(cache) / "features" / "partial").iterdir())


def test_two_ranks_write_the_bytes_of_one_process(tiny_model_dir, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_extract(tiny_model_dir, one)) == 0
    single = capsys.readouterr().out
    r = _torchrun(_extract(tiny_model_dir, two))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _entries(one), _entries(two)
    assert len(a) == 2 * 2 * 9 * 2, f"2 splits x 2 t x 9 layers x 2 pools, got {len(a)}"
    assert a.keys() == b.keys(), "the same content keys (no rank or world in them)"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{len(differ)} entries differ from one process, e.g. {differ[0]}"
    assert _partials(two) == [], f"shards left behind: {_partials(two)}"
    store = FeatureStore(two)
    assert all(store.has(k) for k in b), "every entry verifies against its checksum manifest"
    assert r.stdout.count("36 computed") == 2, f"rank 0 alone prints the summaries:\n{r.stdout}"
    assert single.count("36 computed") == 2, single


def test_a_failed_rank_ends_the_job_and_the_rerun_computes_only_its_batches(
    tiny_model_dir, tmp_path, capsys
):
    cache, ref = tmp_path / "two", tmp_path / "one"
    args = _extract(tiny_model_dir, cache, timesteps="90", splits="test")
    r = _torchrun(args, {torchrun.FAIL_ENV: "1:1"})  # rank 1 dies after its first batch
    assert r.returncode != 0, "a failed rank fails the job"
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert ours == [
        "error: injected failure after 1 batches (EXPLORER_TEST_FAIL_AT) (rank 1 of 2)"
    ], f"one line, from rank 0 only:\n{r.stderr[-3000:]}"
    assert _entries(cache) == {}, "nothing is committed from a failed job"
    progress = [
        json.loads(p.read_text())
        for p in (cache / "features" / "partial").glob("*.shard-*.progress.json")
    ]
    done = {
        tuple(p["shard"]["batches"]): p["rows_done"] for p in progress
    }  # per shard: its batches and the rows finished
    assert set(done) == {(0, 2, 4), (1, 3)}, done
    assert done[(0, 2, 4)] == 3 * BATCH and done[(1, 3)] == BATCH, done

    r = _torchrun(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "t=90 seed=0: resuming, 1 of 5 batches left" in r.stderr, r.stderr[-3000:]
    assert main([*args[:-1], str(ref)]) == 0
    a, b = _entries(ref), _entries(cache)
    assert len(a) == 18 and a == b, "the resumed entries equal one process's, byte for byte"
    assert _partials(cache) == [], "the shards go once the entries are committed"


def test_sweep_on_two_ranks_gives_one_process_table(tiny_model_dir, tmp_path):
    def args(cache, out):
        return [
            "sweep",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            "digits",
            "--limit",
            "40",
            "--timesteps",
            "10,90",
            "--layers",
            "1,-1",
            "--heads",
            "linear",
            "--batch-size",
            str(BATCH),
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ]

    assert main(args(tmp_path / "c1", tmp_path / "one.csv")) == 0
    r = _torchrun(args(tmp_path / "c2", tmp_path / "two.csv"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("results:") == 1, f"rank 0 alone probes and reports:\n{r.stdout}"
    one, two = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    pd.testing.assert_frame_equal(one, two)
    assert _entries(tmp_path / "c1") == _entries(tmp_path / "c2")


# --- pure parts --------------------------------------------------------------------------------


def test_ranks_from_env_and_devices():
    assert torchrun.from_env({}) == Ranks(0, 1, 0) and not torchrun.launched({})
    r = torchrun.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert r == Ranks(3, 8, 1) and r.active and not r.main
    assert torchrun.rank_device("auto", r, cuda_available=True) == "cuda:1"
    assert torchrun.rank_device("cuda", r, cuda_available=True) == "cuda:1"
    assert torchrun.rank_device("auto", r, cuda_available=False) == "cpu"
    assert torchrun.rank_device("cpu", r, cuda_available=True) == "cpu"
    with pytest.raises(ExplorerError, match="makes no sense"):
        torchrun.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ExplorerError, match="integers"):
        torchrun.from_env({"WORLD_SIZE": "two"})


def test_batches_are_dealt_round_robin_from_the_one_process_grid():
    assert torchrun.n_batches(40, 8) == 5 and torchrun.n_batches(41, 8) == 6
    assert torchrun.batch_span(5, 41, 8) == (40, 41)
    assert torchrun.assign(range(5), 2) == [[0, 2, 4], [1, 3]]
    assert torchrun.assign([3], 2) == [[3], []], "a resume spreads what is left again"
    assert torchrun.assign([1, 4, 7], 4) == [[1], [4], [7], []]


def test_plain_process_collectives_are_identities():
    assert not torchrun.current().active
    assert torchrun.broadcast({"a": 1}) == {"a": 1}
    assert torchrun.gather(5) == [5]
    assert torchrun.settle(None, 7) == 7
    with pytest.raises(torchrun.RankFailed, match="boom"):
        torchrun.settle("boom")


def test_injected_failure_hook_is_per_rank():
    env = {torchrun.FAIL_ENV: "1:2"}
    assert torchrun.injected_failure(Ranks(1, 2, 1), env) == 2
    assert torchrun.injected_failure(Ranks(0, 2, 0), env) is None
    assert torchrun.injected_failure(Ranks(1, 2, 1), {}) is None


def _one_process(store, key, batches, n, width):
    """What a one-process run writes: batches in grid order through one partial entry."""
    e = store.begin(key, (n, width), {"layer": "x"})
    for start, rows in batches:
        e.write(start, rows)
    e.commit()
    return store.paths(key)[0].read_bytes(), store.manifest(key)


def test_assembly_from_shards_equals_one_process_even_when_float16_overflows(tmp_path):
    n, width, bs = 20, 3, 4
    rng = np.random.default_rng(0)
    data = [
        rng.standard_normal((min(bs, n - s), width)).astype(np.float16) for s in range(0, n, bs)
    ]
    data[3] = data[3].astype(np.float32) * 1e6  # batch 3 overflows float16
    grid = [(b * bs, rows) for b, rows in enumerate(data)]
    ref_bytes, ref_meta = _one_process(FeatureStore(tmp_path / "ref"), "k" * 24, grid, n, width)
    assert ref_meta["dtype"] == "float32" and ref_meta["widened_at_row"] == 12

    store = FeatureStore(tmp_path / "sharded")
    key = "k" * 24
    parts = {"a-0": [0, 2, 4], "a-1": [1, 3]}  # then a stale shard of another grid, to be ignored
    for tag, bl in parts.items():
        sh = store.begin_shard(key, width, {}, tag=tag, n=n, batch_size=bs, batches=bl)
        row = 0
        for b in bl:
            sh.write(row, data[b])
            row += len(data[b])
        sh.checkpoint(row)
    other = store.begin_shard(key, width, {}, tag="z-0", n=n, batch_size=5, batches=[0])
    other.write(0, np.ones((5, width), np.float16))
    other.checkpoint(5)
    assert sorted(store.shard_sources(key, n, bs, width)) == [0, 1, 2, 3, 4]
    store.assemble(key, (n, width), {"layer": "x"}, bs)
    assert store.paths(key)[0].read_bytes() == ref_bytes
    meta = store.manifest(key)
    assert (meta["dtype"], meta["widened_at_row"]) == ("float32", 12), meta
    assert not list(store.partial_dir.iterdir()), "every shard of the key is gone after commit"


def test_only_finished_batches_of_a_shard_count_and_a_gap_is_a_clear_error(tmp_path):
    store, key, width = FeatureStore(tmp_path), "q" * 24, 2
    sh = store.begin_shard(key, width, {}, tag="t-1", n=12, batch_size=4, batches=[2, 0, 1])
    sh.write(0, np.zeros((4, width), np.float16))
    sh.write(4, np.zeros((4, width), np.float16))
    sh.checkpoint(6)  # batch 2 done; batch 0 only half
    got = store.shard_sources(key, 12, 4, width)
    assert list(got) == [2] and got[2][1] == 0, got
    with pytest.raises(ExplorerError, match="2 batches .first: 0. are in no finished shard"):
        store.assemble(key, (12, width), {}, 4)
    assert not store.exists(key), "nothing half-assembled becomes an entry"


class _Exited(Exception):
    pass


def test_a_rank_leaves_without_interpreter_shutdown_and_a_plain_run_exits_normally(monkeypatch):
    """gloo threads may still drop a collective's tensors (taking the GIL) when a rank ends; in
    interpreter shutdown that aborts the rank, so a rank ends with os._exit after flushing."""
    import explorer.cli as cli

    exits = []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(_Exited):
        cli.run()
    assert exits == [3]

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as plain:
        cli.run()
    assert plain.value.code == 3 and exits == [3], "a plain run exits through Python"
