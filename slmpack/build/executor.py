"""Where package builds run: this machine's processes (``--jobs N``) or a Ray cluster (``--executor ray``).

Both run the same per-package function (``slmpack.build.unit.build_into_cache``) against the same
cache; the build driver publishes every result from the cache with the same code. An executor only
decides where that function runs, how many times a failed task is tried, and which tasks it must
refuse up front (``refuse``: a package no node can hold).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Protocol

from slmpack.build.recipe import BuildUnit
from slmpack.build.unit import Status, build_into_cache, in_fresh_process

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Task:
    """One package to build into the cache: its unit, key and log (beside its output)."""

    unit: BuildUnit
    key: str
    log: Path


@dataclass(frozen=True)
class Outcome:
    status: Status
    error: dict | None
    attempts: int
    seconds: float


class Executor(Protocol):
    retries: int  # a failed task is submitted again this many times

    def refuse(self, task: Task) -> dict | None: ...

    def submit(self, task: Task, cache_root: Path) -> Future: ...

    def outcome(self, task: Task, fut: Future) -> tuple[Status, dict | None]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """In this process (``jobs`` 1), or one spawned process per package, ``jobs`` at a time."""

    retries = 0  # the same machine would fail the same way

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def refuse(self, task: Task) -> dict | None:
        return None

    def submit(self, task: Task, cache_root: Path) -> Future:
        if self.jobs == 1:
            fut: Future = Future()
            fut.set_result(build_into_cache(task.unit, task.key, cache_root, task.log))
            return fut
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn"))
        return self._pool.submit(in_fresh_process, task.unit, task.key, cache_root, task.log)

    def outcome(self, task: Task, fut: Future) -> tuple[Status, dict | None]:
        return fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def make_executor(name: str, jobs: int, address: str | None, cache_root: Path) -> Executor:
    if name == "ray":
        from slmpack.build.ray_executor import RayExecutor

        return RayExecutor(address, cache_root)
    return LocalExecutor(jobs)


def run_tasks(ex: Executor, tasks: list[Task], cache_root: Path,
              on_done: Callable[[Task, Outcome], None]) -> None:
    """Run every task, retrying a failed one ``ex.retries`` times; ``on_done`` gets each final outcome."""
    pending: dict[Future, tuple[Task, int, float]] = {}
    for t in tasks:
        refused = ex.refuse(t)
        if refused is not None:
            on_done(t, Outcome(Status.FAILED, refused, 0, 0.0))
        else:
            started = time.perf_counter()
            pending[ex.submit(t, cache_root)] = (t, 1, started)
    while pending:
        finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in finished:
            t, attempt, started = pending.pop(fut)
            status, error = ex.outcome(t, fut)
            if status is Status.FAILED and attempt <= ex.retries:
                pending[ex.submit(t, cache_root)] = (t, attempt + 1, started)
            else:
                on_done(t, Outcome(status, error, attempt, time.perf_counter() - started))
