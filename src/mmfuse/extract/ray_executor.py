"""Per-file extraction as Ray tasks: a local Ray instance by default, or a running cluster by address.

``pip install 'mmfuse[ray]'``. Each media file is one task running :func:`mmfuse.extract.extract_file`; the
extractors are sent once through the object store (without loaded models: each worker loads its own), and
results come back as they finish. The cache folder must be reachable from every worker (a shared file system
on a cluster) for cache hits to carry across machines; it is only an optimisation otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mmfuse._ray import ensure_ray
from mmfuse.extract.base import Extractor
from mmfuse.extract.pipeline import FileResult, extract_file

__all__ = ["run_ray"]


def _task(path: str, recording: str, extractors: list[Extractor], cache_root: str, use_cache: bool) -> FileResult:
    return extract_file(path, extractors, recording=recording, cache=cache_root, use_cache=use_cache)


def run_ray(
    jobs: Sequence[tuple[str, Path]],
    extractors: Sequence[Extractor],
    *,
    cache_root: str | os.PathLike[str],
    use_cache: bool = True,
    address: str | None = None,
    num_cpus: int | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Extract ``(recording, path)`` jobs as Ray tasks and return their results in job order.

    Ray is started (``ray.init``) when it is not running yet: on ``address`` (a cluster such as
    ``"ray://head:10001"`` or ``"auto"``) or, when None, as a local instance using ``num_cpus`` cores.

    Args:
        jobs: ``(recording name, media path)`` pairs.
        extractors: Extractor objects.
        cache_root: Extraction cache folder (visible to every worker).
        use_cache: Read and write the cache.
        address: Ray cluster address, or None for a local instance.
        num_cpus: CPUs of a local instance (default: Ray's choice).
        on_file: Called with each result as it arrives (completion order).

    Returns:
        One :class:`FileResult` per job, in the order of ``jobs``.
    """
    ray = ensure_ray(address, num_cpus)
    remote = ray.remote(num_cpus=1)(_task)
    ex_ref = ray.put(list(extractors))
    refs = [remote.remote(str(p), rec, ex_ref, str(cache_root), use_cache) for rec, p in jobs]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[FileResult | None] = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            res = ray.get(ref)
            res.path = Path(res.path)
            results[index[ref]] = res
            if on_file is not None:
                on_file(res)
    return [r for r in results if r is not None]
