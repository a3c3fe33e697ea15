"""Where the runs of a comparison train: worker processes of this machine, or Ray tasks on a cluster.

An executor takes JSON-safe run specs (each names its ``fusion`` and ``seed``) and a module-level function that
trains one spec and returns its result row; it calls ``on_done(spec_index, row)`` as each run finishes, so the
caller writes results as they arrive (``--resume`` then reuses every finished run). A run that fails (after Ray's
retries) stops the comparison with a :class:`RunFailed` that names the fusion, the seed and the error; no failure
is silently lost. Every run is seeded on its own, so results do not depend on the executor.

Example:
    >>> sorted(EXECUTORS)
    ['local', 'ray']
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from mmfuse._ray import ensure_ray

__all__ = ["EXECUTORS", "LocalProcessExecutor", "RayExecutor", "RunExecutor", "RunFailed", "make_executor"]

RunFn = Callable[[dict[str, Any]], dict[str, Any]]
OnDone = Callable[[int, dict[str, Any]], None]


class RunFailed(RuntimeError):
    """A run of a comparison failed; the message names its fusion and seed and the error it raised."""


def _label(spec: Mapping[str, Any]) -> str:
    return f"{spec.get('fusion', '?')} seed {spec.get('seed', '?')}"


class RunExecutor(Protocol):
    """Runs specs with a function and reports each result as it finishes."""

    name: ClassVar[str]

    def run(self, specs: Sequence[dict[str, Any]], fn: RunFn, on_done: OnDone) -> None:
        """Run ``fn(spec)`` for every spec; call ``on_done(index, row)`` in completion order."""
        ...


def _set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        torch.set_num_threads(num_threads)


@dataclass
class LocalProcessExecutor:
    """``workers`` spawned processes of this machine, ``num_threads`` torch threads each."""

    workers: int = 2
    num_threads: int | None = 1
    name: ClassVar[str] = "local"

    def run(self, specs: Sequence[dict[str, Any]], fn: RunFn, on_done: OnDone) -> None:
        """Run the specs in a process pool (spawn: fork is unsafe with torch's thread pools)."""
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_set_threads, initargs=(self.num_threads,)
        ) as pool:
            futures = {pool.submit(fn, dict(spec)): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    row = future.result()
                except Exception as exc:
                    raise RunFailed(f"The run {_label(specs[index])} failed: {type(exc).__name__}: {exc}") from exc
                on_done(index, row)


def _ray_call(fn: RunFn, spec: dict[str, Any], num_threads: int | None) -> dict[str, Any]:
    """One Ray task: the thread count is set inside the task, then the run."""
    _set_threads(num_threads)
    return fn(spec)


@dataclass
class RayExecutor:
    """One Ray task per run, each reserving ``num_cpus`` CPUs and using ``num_threads`` torch threads.

    Ray is started on ``address`` (``"auto"``, ``"ray://head:10001"``) or as a local instance, unless it is already
    running in this process. A task whose worker dies or that raises is retried ``max_retries`` times. The data set
    and the run directory must be on a file system every worker sees.
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_threads: int | None = 1
    max_retries: int = 1
    name: ClassVar[str] = "ray"

    def run(self, specs: Sequence[dict[str, Any]], fn: RunFn, on_done: OnDone) -> None:
        """Submit every spec as a task and report the results as they finish."""
        ray = ensure_ray(self.address, what="'mmfuse compare --executor ray'")
        remote = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries, retry_exceptions=True)(_ray_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, dict(spec), self.num_threads) for spec in specs]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        row = ray.get(ref)
                    except Exception as exc:
                        cause = getattr(exc, "cause", None) or exc
                        raise RunFailed(
                            f"The run {_label(specs[index[ref]])} failed after {self.max_retries} retr"
                            f"{'y' if self.max_retries == 1 else 'ies'}: {type(cause).__name__}: {cause}"
                        ) from exc
                    on_done(index[ref], row)
        finally:
            for ref in pending:  # a failed comparison does not leave tasks training
                ray.cancel(ref, force=True)


EXECUTORS: dict[str, type] = {"local": LocalProcessExecutor, "ray": RayExecutor}
"""The executors by name (``--executor``)."""


def make_executor(
    name: str, *, workers: int = 2, num_threads: int | None = 1, address: str | None = None
) -> RunExecutor:
    """The executor ``name`` (``"local"``: ``workers`` processes; ``"ray"``: tasks on ``address``).

    Raises:
        ValueError: an unknown name (the valid ones are listed), or an address for the local executor.
    """
    if name not in EXECUTORS:
        raise ValueError(f"The 'executor' parameter must be one of {sorted(EXECUTORS)}. Got {name!r} instead.")
    if name == "ray":
        return RayExecutor(address=address, num_threads=num_threads)
    if address is not None:
        raise ValueError(f"The 'ray_address' parameter needs executor 'ray'. Got executor {name!r}.")
    return LocalProcessExecutor(workers=workers, num_threads=num_threads)
