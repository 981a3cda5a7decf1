"""Runs the study's cells in worker processes (--jobs N) or as Ray tasks (--ray [ADDRESS]).

A worker gets the cell, its table and the trained transfer sources (dense twin, MLP of the same
dataset, seed and grid point) as saved-model bytes, and returns the cell's record and its model's
bytes; the parent writes both into the run folder atomically, as a sequential run does, so a
crash loses at most the cells in flight and a rerun resumes. Workers need no shared file system,
so the same code runs on a Ray cluster. A cell waits until its sources are finished (per dataset,
seed and grid point two waves: sources, then the rest).

Each worker sets its torch thread count before it runs a cell: cells give the same bits as a
sequential run with the same --threads (a BLAS may split a GEMM's reduction across threads, so
equal bits are promised only at equal thread counts; each record states its own).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
from pathlib import Path

from .arms import DENSE_TWIN

_TABLES: dict = {}   # a pool worker's tables, set once by its initializer
_SPLITS: dict = {}   # (dataset, seed) -> Split, cached per worker


class PoolError(ValueError):
    """The pool cannot be used (bad --jobs, unreachable Ray cluster): a one-line message."""


def default_threads(jobs: int) -> int:
    """Threads per worker so that jobs x threads <= the machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_cell_task(cell, table, config, sources: dict, threads: int):
    """In a worker: trains, measures and attacks one cell with `threads` torch threads.
    sources: {"transfer_dense" | "transfer_mlp": (source cell, saved-model bytes)}.
    Returns (record, saved-model bytes)."""
    import torch

    from . import runner
    from .data import make_split

    torch.set_num_threads(threads)
    key = (cell.dataset, cell.seed)
    if key not in _SPLITS:
        _SPLITS[key] = make_split(table, cell.seed, max_rows=config.max_rows)
    split = _SPLITS[key]
    models = {name: runner.model_from_bytes(state, source, split, config)
              for name, (source, state) in sources.items()}
    record, model = runner.run_cell(cell, table, split, config, models, lambda s: None)
    return record, runner.state_bytes(model)


def _pool_task(cell, config, sources, threads):
    return run_cell_task(cell, _TABLES[cell.dataset], config, sources, threads)


def _set_tables(tables):
    _TABLES.update(tables)


class LocalPool:
    """N worker processes on this machine (spawned: no state inherited from the parent)."""

    def __init__(self, jobs: int, threads=None):
        _check_jobs(jobs)
        self.jobs = jobs
        self.threads = threads or default_threads(jobs)
        self._executor = None

    def start(self, tables: dict) -> None:
        self._executor = cf.ProcessPoolExecutor(
            self.jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_set_tables, initargs=(tables,))

    def submit(self, cell, config, sources) -> cf.Future:
        return self._executor.submit(_pool_task, cell, config, sources, self.threads)

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            # on an error or Ctrl-C: no new cells, and no waiting for those in flight
            self._executor.shutdown(wait=not cancel, cancel_futures=cancel)
            self._executor = None


class RayPool:
    """Cells as Ray tasks, each asking for `threads` CPUs: on the cluster at `address`, or on a
    local Ray instance with `cpus` CPUs (default: all) when address is None."""

    def __init__(self, address=None, threads=None, cpus=None):
        try:
            import ray
        except ImportError:
            raise PoolError('--ray needs Ray: pip install "snnkernels[ray]"') from None
        self._ray = ray
        self.address, self.cpus = address, cpus
        self.threads = threads or 1
        if address is not None:
            _check_reachable(address)
        elif cpus is not None and self.threads > cpus:
            raise PoolError(f"--threads {self.threads} per Ray task exceeds the local instance's "
                            f"{cpus} CPUs (--jobs): no task could start")

    def start(self, tables: dict) -> None:
        ray = self._ray
        options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            if self.address is None:
                # workers of a local instance import this very snnkernels (a cluster's nodes
                # must have it installed)
                package_parent = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                       if p)
                ray.init(num_cpus=self.cpus, runtime_env={"env_vars": {"PYTHONPATH": path}},
                         **options)
            else:
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise PoolError(f"--ray {self.address or ''}: cannot start Ray "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self._task = ray.remote(num_cpus=self.threads)(run_cell_task)
        self._tables = {name: ray.put(table) for name, table in tables.items()}

    def submit(self, cell, config, sources) -> cf.Future:
        ref = self._task.remote(cell, self._tables[cell.dataset], config, sources, self.threads)
        return ref.future()

    def close(self, cancel: bool = False) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()  # drops the driver's unfinished tasks


def _check_jobs(jobs) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PoolError(f"--jobs must be >= 1, got {jobs!r}")


def _check_reachable(address: str) -> None:
    """A host:port that answers no TCP connection is an error now, not after Ray's retries."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise PoolError(f"--ray: give the cluster's address as HOST:PORT (e.g. 10.0.0.1:6379) "
                        f"or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise PoolError(f"--ray {address}: no Ray cluster answers there "
                        f"({e.strerror or e}); start one with `ray start --head`") from None


def run_parallel(pool, config, folder, tables: dict, cells: list, todo: list, *,
                 show_progress: bool = True) -> list:
    """run_study's parallel path: runs the cells of `todo` on `pool` (LocalPool or RayPool),
    each as soon as its transfer sources are saved; returns every cell's record in plan order."""
    from tqdm.auto import tqdm

    from .runner import MLP, source_cells

    records = {c: folder.finished(c) for c in cells if c not in todo}
    states = {c: folder.model_path(c).read_bytes() for c in records
              if c.arm in (DENSE_TWIN, MLP)}
    all_cells = set(cells)

    def sources_of(cell):
        wanted = {name: source for name, source in source_cells(cell).items()
                  if source in all_cells}
        if any(source not in states for source in wanted.values()):
            return None  # not ready yet
        return {name: (source, states[source]) for name, source in wanted.items()}

    waiting, running = list(todo), {}
    pool.start({name: tables[name] for name in {c.dataset for c in todo}})
    bar = tqdm(total=len(todo), unit="cell", disable=not show_progress, dynamic_ncols=True)
    ok = False
    try:
        while waiting or running:
            for cell in list(waiting):
                sources = sources_of(cell)
                if sources is not None:
                    waiting.remove(cell)
                    running[pool.submit(cell, config, sources)] = cell
            if not running:
                raise RuntimeError(f"cells wait for sources that never run: {waiting}")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                cell = running.pop(future)
                record, state = future.result()
                folder.save(cell, record, state)
                records[cell] = record
                if cell.arm in (DENSE_TWIN, MLP):
                    states[cell] = state
                bar.set_description(f"{cell.dataset} {cell.arm} seed {cell.seed}")
                bar.update(1)
        ok = True
    finally:
        bar.close()
        pool.close(cancel=not ok)
    return [records[c] for c in cells]


def make_pool(jobs=None, ray=None, threads=None):
    """The pool the command line asks for: None (sequential), LocalPool or RayPool.
    ray: None (no Ray), "" (a local instance), or the cluster's address."""
    if jobs is not None:
        _check_jobs(jobs)
    if ray is not None:
        return RayPool(address=ray or None, threads=threads, cpus=jobs if not ray else None)
    if jobs is not None:
        return LocalPool(jobs, threads)
    return None

