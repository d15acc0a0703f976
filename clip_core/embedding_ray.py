"""clip-embed's Ray Data engine: the local engine's UnitEncoder in an actor pool, one model per actor.

The driver plans the run exactly as the local engine does (clip_core.embedding.plan_collection: the
same output shards, the finished ones skipped), makes a Ray dataset of the shards left to do,
``map_batches`` an actor class over it on ``ray.data.ActorPoolStrategy(size=num_actors)``, and
writes each shard's result as it arrives, in order (``preserve_order``), with the local engine's
writer. Each actor loads the encoder once and encodes a whole shard with the local engine's code
(threaded decoding overlapped with compute, captions bucketed by length), so the two engines
produce the same rows from the same batches.

The engine itself knows nothing of embeddings: it maps a worker (made once per actor by an
importable ``setup(spec)`` function) over units given as JSON and yields each unit's bytes in order.
For clip-embed the rows are shard descriptions (the paths and captions of a shard, or the path of a
tar), made with ``ray.data.from_items``; the actors read the image files and tar shards themselves
(clip_core.shards), so on a cluster the inputs must be on storage every node can read, and the
output folder is written by the driver only.

Without ``ray_address`` a local Ray is started for the run on 127.0.0.1, with ``num_actors`` CPUs
(one per actor) and a small object store, and shut down afterwards, whatever happens.
Ray comes with the ``[ray]`` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import numpy as np

OBJECT_STORE_BYTES = 256 * 1024**2  # results are embeddings only: a few MB per shard


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError("the ray engine needs Ray Data: pip install 'clip-multibackend[ray]'") from None
    return ray


class UnitActor:
    """One worker per actor, made once by ``setup(spec)``: a callable from a unit's JSON to its result's
    bytes (for clip-embed, an encoder and its thread pool; see clip_core.embedding.ray_worker)."""

    def __init__(self, setup: Callable[[dict], Callable[[str], bytes]], spec: dict):
        self.work = setup(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"result": np.array([self.work(str(unit)) for unit in batch["unit"]], dtype=object)}


def _start_local_ray(ray, num_actors: int, quiet: bool) -> None:
    import clip_core

    # Workers import this very clip_core (a source checkout works as well as an installed one).
    root = os.path.dirname(os.path.dirname(os.path.abspath(clip_core.__file__)))
    python_path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=num_actors,
        num_gpus=0,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING if quiet else logging.INFO,
        log_to_driver=not quiet,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )


def ray_map_units(
    units: list[str],
    setup: Callable[[dict], Callable[[str], bytes]],
    spec: dict,
    num_actors: int = 2,
    ray_address: str | None = None,
    quiet: bool = True,
) -> Iterator[bytes]:
    """The result of every unit (JSON in, bytes out), in unit order, from ``num_actors`` Ray actors,
    each running one ``setup(spec)`` worker. ``setup`` must be importable (a module-level function):
    Ray sends it to the workers by name."""
    if num_actors < 1:
        raise ValueError(f"--num-actors must be at least 1, got {num_actors}")
    if not units:
        return
    ray = _import_ray()
    started = False
    try:
        if not ray.is_initialized():
            started = True
            if ray_address:
                ray.init(address=ray_address, logging_level=logging.WARNING if quiet else logging.INFO)
            else:
                _start_local_ray(ray, num_actors, quiet)
        context = ray.data.DataContext.get_current()
        saved = (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            context.print_on_execution_start,
        )
        context.execution_options.preserve_order = True
        context.enable_progress_bars = context.print_on_execution_start = not quiet
        dataset = ray.data.from_items([{"unit": unit} for unit in units], override_num_blocks=len(units))
        dataset = dataset.map_batches(
            UnitActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            fn_constructor_kwargs={"setup": setup, "spec": spec},
            num_cpus=1,
        )
        try:
            for row in dataset.iter_rows():
                yield row["result"]
        finally:
            preserve_order, progress_bars, print_on_start = saved
            context.execution_options.preserve_order = preserve_order
            context.enable_progress_bars, context.print_on_execution_start = progress_bars, print_on_start
    finally:
        if started:
            ray.shutdown()


__all__ = ["UnitActor", "ray_map_units"]
