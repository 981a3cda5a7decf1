"""Cells fanned out (`--jobs N`, `--ray [ADDRESS]`): a small grid gives the same per-cell numbers
sequentially, in two worker processes and on a local Ray instance with 2 CPUs, every cell at one
torch thread (a BLAS may split a GEMM's reduction across threads, so equal bits are promised
only at equal thread counts; each record states its own). Timings are left out of the comparison."""

from __future__ import annotations

import json
import socket

import pytest

import snnkernels

from snnkernels.study import config as C
from snnkernels.study import executor
from tiny_study import TINY, refused, study

GRID = ("--hidden", "8,12", "--threads", "1")  # two widths: 2 x 3 cells
TIMINGS = ("seconds", "throughput")


def cells(out) -> dict:
    """Every cell file of a run folder without its timings (the validation curve keeps its
    scores, not its clock)."""
    result = {}
    for path in sorted((out / "cells").iterdir()):
        record = json.loads(path.read_text())
        for key in TIMINGS:
            record.pop(key)
        record["val_curve"] = [score for _, score in record["val_curve"]]
        result[path.name] = record
    return result


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("fanout") / "sequential"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(C.PRESETS, "quick", TINY)
        assert study("--out", str(out), *GRID) == 0
    return cells(out)


def test_sequential_grid_has_a_cell_per_width(sequential):
    assert len(sequential) == 6
    widths = {name: record["hidden"] for name, record in sequential.items()}
    assert widths["iris__topk_25__seed0__h12.json"] == [12]
    assert widths["iris__mlp__seed0__h8.json"] == [8]
    assert all(r["threads"] == 1 for r in sequential.values())


def test_jobs_gives_the_same_cells(tmp_path, tiny, sequential):
    out = tmp_path / "jobs"
    assert study("--out", str(out), "--jobs", "2", *GRID) == 0
    assert cells(out) == sequential
    assert (out / "report.md").exists()


def test_ray_gives_the_same_cells(tmp_path, tiny, sequential):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    assert study("--out", str(out), "--ray", "--jobs", "2", *GRID) == 0
    assert cells(out) == sequential


def test_jobs_resumes_and_adds_only_missing_cells(tmp_path, tiny, sequential):
    out = tmp_path / "resume"
    assert study("--out", str(out), "--hidden", "8", "--threads", "1") == 0  # cells of width 8
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    # one width makes no grid: the keys of width 8 are the plain ones, so a grid of 8,12 is
    # another run folder
    assert sorted(before) == ["iris__dense_fast_sigmoid__seed0.json", "iris__mlp__seed0.json",
                              "iris__topk_25__seed0.json"]
    grid_out = tmp_path / "grid"
    assert study("--out", str(grid_out), "--hidden", "8,12", "--arms",
                 "dense_fast_sigmoid,mlp", "--threads", "1") == 0
    assert study("--out", str(grid_out), "--jobs", "2", *GRID) == 0
    assert cells(grid_out) == sequential


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--ray", f"127.0.0.1:{_free_port()}"], "no Ray cluster answers"),
    (["--ray", "nohostport"], "HOST:PORT"),
    (["--ray", "--jobs", "1", "--threads", "2"], "exceeds"),
    (["--hidden", "0,8"], "--hidden"),
    (["--hidden", "8,x"], "--hidden"),
    (["--steps", "0"], "--steps"),
    (["--layers", "0"], "--layers"),
])
def test_bad_fanout_and_grid_values_one_line_exit_2(tmp_path, tiny, capsys, args, message):
    out = tmp_path / "run"
    assert message in refused(capsys, "--out", str(out), *args)
    assert not (out / "cells").exists() or not list((out / "cells").iterdir())


def test_threads_per_worker_fill_the_cores_without_oversubscribing():
    import os

    cores = os.cpu_count()
    for jobs in (1, 2, 3, cores, cores + 1):
        threads = executor.default_threads(jobs)
        assert threads >= 1 and (jobs * threads <= cores or threads == 1)


class InProcessPool:
    """A pool that runs each cell at submit time in this process (the scheduler's view of a
    pool), and interrupts at the `stop_at`-th cell, as Ctrl-C or a crashed worker would."""

    def __init__(self, stop_at: int):
        self.stop_at, self.submitted, self.closed = stop_at, [], None

    def start(self, tables):
        self.tables = tables

    def submit(self, cell, config, sources):
        from concurrent.futures import Future

        self.submitted.append((cell, sorted(sources)))
        if len(self.submitted) == self.stop_at:
            raise KeyboardInterrupt
        future = Future()
        future.set_result(executor.run_cell_task(cell, self.tables[cell.dataset], config,
                                                 sources, 1))
        return future

    def close(self, cancel=False):
        self.closed = "cancelled" if cancel else "done"


def test_interrupted_pool_keeps_finished_cells_and_resumes(tmp_path, tiny, monkeypatch,
                                                           sequential):
    pool = InProcessPool(stop_at=3)
    monkeypatch.setattr(executor, "make_pool", lambda **kwargs: pool)
    out = tmp_path / "interrupted"
    assert study("--out", str(out), "--jobs", "2", *GRID) == 130
    assert pool.closed == "cancelled"
    # sources first, each cell handed the sources that finished before it
    first = [(c.arm, sources) for c, sources in pool.submitted[:2]]
    assert first == [("dense_fast_sigmoid", []), ("dense_fast_sigmoid", [])]  # both widths
    assert len(list((out / "cells").iterdir())) == 2
    monkeypatch.undo()
    monkeypatch.setitem(C.PRESETS, "quick", TINY)
    assert study("--out", str(out), "--jobs", "2", *GRID) == 0
    assert cells(out) == sequential


def test_ray_address_of_a_running_cluster(tmp_path, sequential):
    """--ray ADDRESS joins a cluster that another process started (here: a local one)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "cluster"
        tests = Path(__file__).parent
        root = Path(snnkernels.__file__).parents[1]  # this checkout's snnkernels
        driver = (f"import sys; sys.path.insert(0, {str(tests)!r})\n"
                  "from snnkernels.study import config as C\n"
                  "from tiny_study import TINY, study\nC.PRESETS['quick'] = TINY\n"
                  f"sys.exit(study('--out', {str(out)!r}, '--ray', {address!r}, *{GRID!r}))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
        done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        ray.shutdown()
    assert cells(out) == sequential
