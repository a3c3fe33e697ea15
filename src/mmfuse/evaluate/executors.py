"""Where comparison runs, search workers and analysis tasks go: worker processes, or Ray tasks.

An executor takes JSON-safe specs (a comparison's name their ``fusion`` and ``seed``, a search's its ``worker``)
and a module-level function that does one spec's work and returns its result row; it calls
``on_done(spec_index, row)`` as each finishes, so the caller writes results as they arrive (``--resume`` then
reuses every finished run), and ``on_wait()`` at least every :data:`POLL_S` seconds while tasks run, so a caller
whose tasks take long (a search's workers) can report what they stored meanwhile. A task that fails (after Ray's
retries) stops the work with a :class:`RunFailed` that names the task (``describe(spec)``: the fusion and seed of
a run, the analysis and model of an analysis task, the worker of a search) and the error; no failure is silently
lost. Every task is seeded on its own, so results do not depend on the executor.

Example:
    >>> sorted(EXECUTORS)
    ['local', 'ray']
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mmfuse._ray import ensure_ray

__all__ = [
    "EXECUTORS",
    "POLL_S",
    "LocalProcessExecutor",
    "RayExecutor",
    "RunExecutor",
    "RunFailed",
    "describe_run",
    "executor_or_none",
    "make_executor",
    "run_failed",
]

RunFn = Callable[[dict[str, Any]], dict[str, Any]]
OnDone = Callable[[int, dict[str, Any]], None]
Describe = Callable[[Mapping[str, Any]], str]
OnWait = Callable[[], None]

POLL_S = 1.0
"""Seconds an executor waits for a task to finish before it calls ``on_wait`` again."""


class RunFailed(RuntimeError):
    """A task failed (a comparison run, a tune worker, an analysis of one model); the message names it and its error."""


def describe_run(spec: Mapping[str, Any]) -> str:
    """What a comparison run is called in errors: ``"run concat seed 0"``.

    Example:
        >>> describe_run({"fusion": "concat", "seed": 0})
        'run concat seed 0'
    """
    return f"run {spec.get('fusion', '?')} seed {spec.get('seed', '?')}"


def run_failed(what: str, exc: BaseException, retries: int | None = None) -> RunFailed:
    """The :class:`RunFailed` for the task ``what`` that raised ``exc`` (a Ray task error is unwrapped to its cause).

    Raise it ``from exc``. ``retries``: how often Ray retried the task (said in the message), None for no retry.

    Example:
        >>> str(run_failed("run late seed 1", ValueError("no rows"), retries=1))
        'The run late seed 1 failed after 1 retry: ValueError: no rows'
    """
    cause = getattr(exc, "cause", None) or exc
    after = "" if retries is None else f" after {retries} retr{'y' if retries == 1 else 'ies'}"
    return RunFailed(f"The {what} failed{after}: {type(cause).__name__}: {cause}")


@dataclass
class _Tasks:
    """Tasks an executor submitted (futures, Ray object refs): ``handles[i]`` runs spec ``i``.

    ``wait(pending, timeout) -> (done, pending)`` returns once one of ``pending`` finished or ``timeout`` seconds
    passed (None: no limit); ``result(handle)`` is the task's row, or raises its error.
    """

    handles: list[Any]
    wait: Callable[[list[Any], float | None], tuple[list[Any], list[Any]]]
    result: Callable[[Any], dict[str, Any]]


class RunExecutor(ABC):
    """Runs specs with a function and reports each result as it finishes: the one loop of every executor.

    A subclass says how its tasks are submitted, waited for and cancelled (:meth:`_submit`).
    """

    name: ClassVar[str]

    def run(
        self,
        specs: Sequence[dict[str, Any]],
        fn: RunFn,
        on_done: OnDone,
        describe: Describe = describe_run,
        on_wait: OnWait | None = None,
    ) -> None:
        """Run ``fn(spec)`` for every spec; call ``on_done(index, row)`` in completion order.

        ``on_wait()`` (when given) is called after each wait for the tasks, which lasts at most :data:`POLL_S`
        seconds. A task that fails raises :class:`RunFailed` naming ``describe(spec)``; the tasks not yet finished
        are cancelled.
        """
        with self._submit(specs, fn) as tasks:
            index = {handle: i for i, handle in enumerate(tasks.handles)}
            pending = list(tasks.handles)
            while pending:
                done, pending = tasks.wait(pending, None if on_wait is None else POLL_S)
                for handle in sorted(done, key=index.__getitem__):
                    try:
                        row = tasks.result(handle)
                    except Exception as exc:
                        raise run_failed(describe(specs[index[handle]]), exc, self._retries()) from exc
                    on_done(index[handle], row)
                if on_wait is not None:
                    on_wait()

    @abstractmethod
    def _submit(self, specs: Sequence[dict[str, Any]], fn: RunFn) -> AbstractContextManager[_Tasks]:
        """Start a task per spec; leaving the block with an error cancels the tasks that have not finished."""

    def _retries(self) -> int | None:
        """How often a failed task was retried (said in :class:`RunFailed`); None: never."""
        return None


def _set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        torch.set_num_threads(num_threads)


def _wait_futures(pending: list[Any], timeout: float | None) -> tuple[list[Any], list[Any]]:
    done, still = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
    return list(done), list(still)


@dataclass
class LocalProcessExecutor(RunExecutor):
    """``workers`` spawned processes of this machine, ``num_threads`` torch threads each."""

    workers: int = 2
    num_threads: int | None = 1
    name: ClassVar[str] = "local"

    @contextmanager
    def _submit(self, specs: Sequence[dict[str, Any]], fn: RunFn) -> Iterator[_Tasks]:
        """A process pool (spawn: fork is unsafe with torch's thread pools)."""
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_set_threads, initargs=(self.num_threads,)
        ) as pool:
            futures = [pool.submit(fn, dict(spec)) for spec in specs]
            try:
                yield _Tasks(futures, _wait_futures, Future.result)
            except BaseException:
                for queued in futures:  # the queued specs do not start; those already handed on end
                    queued.cancel()
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _ray_call(fn: RunFn, spec: dict[str, Any], num_threads: int | None) -> dict[str, Any]:
    """One Ray task: the thread count is set inside the task, then the run."""
    _set_threads(num_threads)
    return fn(spec)


@dataclass
class RayExecutor(RunExecutor):
    """One Ray task per run, each reserving ``num_cpus`` CPUs and using ``num_threads`` torch threads.

    Ray is started on ``address`` (``"auto"``, ``"ray://head:10001"``) or as a local instance, unless it is already
    running in this process. A task whose worker dies or that raises is retried ``max_retries`` times (the one retry
    rule of every Ray task of a comparison, a search or an analysis). The data set and the run directory must be on
    a file system every worker sees.
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_threads: int | None = 1
    max_retries: int = 1
    name: ClassVar[str] = "ray"

    @contextmanager
    def _submit(self, specs: Sequence[dict[str, Any]], fn: RunFn) -> Iterator[_Tasks]:
        """Every spec a task at once."""
        ray = ensure_ray(self.address)
        remote = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries, retry_exceptions=True)(_ray_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, dict(spec), self.num_threads) for spec in specs]
        try:
            yield _Tasks(refs, lambda pending, timeout: ray.wait(pending, num_returns=1, timeout=timeout), ray.get)
        except BaseException:
            # A failed comparison, search or analysis does not leave tasks running. Only the unfinished are
            # cancelled: force-cancelling a task that has already failed or finished can abort this process in
            # Ray's task manager (seen with Ray 2.60: "Check failed: it != submissible_tasks_.end()").
            _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in unfinished:
                ray.cancel(ref, force=True)
            raise

    def _retries(self) -> int | None:
        return self.max_retries


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


def executor_or_none(
    name: str, *, workers: int = 1, num_threads: int | None = 1, address: str | None = None
) -> RunExecutor | None:
    """The executor of a command's ``--executor``/``--jobs``/``--ray-address``; None for one local job.

    One local worker gains nothing over the calling process (a spawned process would only add its start-up), so
    None tells the caller (``compare``'s runs, ``analyze_run``) to do the work itself. ``compare --analyze`` hands
    the analysis the executor its runs used through this one rule, as ``mmfuse analyze`` does.

    Raises:
        ValueError: as :func:`make_executor`.

    Example:
        >>> executor_or_none("local") is None, executor_or_none("local", workers=2)
        (True, LocalProcessExecutor(workers=2, num_threads=1))
    """
    if name == "local" and workers == 1 and address is None:
        return None
    return make_executor(name, workers=workers, num_threads=num_threads, address=address)
