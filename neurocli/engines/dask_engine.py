"""The dask engine: the prepared rows in parts on the workers of a dask.distributed cluster.

Each part is a whole number of blocks of the reduction rule's grid, column-major like the
in-memory engine's X, kept on the workers (each part on two, when there are two, so a lost
worker costs no data). Every full-batch epoch sends (w, b) to the parts; each part returns its
blocks' partials, computed by the in-memory engine's own block function with the BLAS on one
thread; the client adds them in block order with the one reduction. So the bits are the
in-memory engine's, whatever the number of workers or which worker took which part. dask
schedules, moves and recomputes; neurocli only says what to compute.

The optional ``dask`` extra: ``pip install "neurocli[dask]"``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from neurocli import neuron
from neurocli.engines import BatchesDone, EpochSums, combine, rows_per_block
from neurocli.errors import ConfigError
from neurocli.neuron import LossGrad

INSTALL = 'pip install "neurocli[dask]"'
# Bytes of X per part on a worker: large enough that a task's overhead is noise.
PART_BYTES = 64 << 20


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"engine.kind dask needs dask.distributed, an optional extra: {INSTALL}",
                          where="engine.kind") from None
    return distributed


def part_partials(X: np.ndarray, y: np.ndarray, w: np.ndarray, b, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: the partials of a part's blocks (``rows`` rows each), by
    :func:`neurocli.engines.memory.block_partials`, the BLAS held to one thread."""
    from threadpoolctl import threadpool_limits

    from neurocli.engines.memory import block_partials

    n_blocks = -(-X.shape[0] // rows)
    grad_parts = np.empty((n_blocks, X.shape[1]), dtype=np.result_type(X, w, y))
    sums = np.empty((n_blocks, 4), dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        block_partials(X, y, w, b, rows, range(n_blocks), grad_parts, sums)
    return grad_parts, sums


def any_active(X: np.ndarray, w: np.ndarray, b) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.any(neuron.active_mask(neuron.pre_activation(X, w, b))))


def check_batch_size(batch_size: int, n: int) -> None:
    if batch_size < n:
        raise ConfigError("engine.kind dask trains full batch only for now: set training.batch_size: null, "
                          "or use engine.kind memory or stream", where="training.batch_size")


class DaskEngine:
    """The :class:`neurocli.engines.Engine` of a training set in parts on a dask cluster.

    X : (n_samples, n_features), y : (n_samples,), cut here into parts and sent to the
    workers; client : a ``distributed.Client``. Full batch only for now.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, client, batch_size: int, part_bytes: int = PART_BYTES,
                 owns_client: bool = False):
        n, d = X.shape
        check_batch_size(batch_size, n)
        self.client, self._owns_client = client, owns_client
        self.n_samples, self.n_features = n, d
        self.dtype = X.dtype
        self.batch_size, self.n_batches = n, 1
        self.rows = rows_per_block(n, d, X.dtype)
        per_part = max(1, part_bytes // max(1, self.rows * d * X.dtype.itemsize)) * self.rows
        bounds = list(range(0, n, per_part)) + [n] if self.rows < n else [0, n]
        # the one-block grid of small data is computed by neuron.loss_and_gradient on the very array
        # the in-memory engine would use (its bits can depend on X's strides); many blocks go out
        self._small = (X, y) if self.rows >= n else None
        parts = [(np.asfortranarray(X[lo:hi]), np.ascontiguousarray(y[lo:hi])) for lo, hi in zip(bounds, bounds[1:])]
        self._parts = client.scatter(parts, hash=False)
        if len(client.scheduler_info()["workers"]) > 1:
            client.replicate(self._parts, n=2)  # a lost worker loses no part

    def loss_and_gradient(self, w: np.ndarray, b) -> LossGrad:
        if self._small is not None:  # a grid of one block (under 8 MB): here, as the in-memory engine does
            return neuron.loss_and_gradient(*self._small, w, b)
        futures = [self.client.submit(_on_part, part_partials, part, w, b, self.rows, pure=False)
                   for part in self._parts]
        results = self.client.gather(futures)  # in part order: the blocks in global order
        return combine(np.concatenate([g for g, _ in results]), np.concatenate([s for _, s in results]),
                       self.n_samples)

    def any_active(self, w: np.ndarray, b) -> bool:
        futures = [self.client.submit(_on_part, any_active, part, w, b, pure=False, x_only=True)
                   for part in self._parts]
        return any(self.client.gather(futures))

    def start(self, epoch: int) -> None:
        pass

    def minibatch_epoch(self, epoch: int, w: np.ndarray, b, first_batch: int, sums: EpochSums,
                        stop_requested: Callable[[], bool]) -> BatchesDone:
        raise NotImplementedError("the dask engine trains full batch only")

    def close(self) -> None:
        """Let go of the parts; a cluster started here is shut down."""
        self.client.cancel(self._parts)
        if self._owns_client:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()


def _on_part(fn, part, *args, x_only: bool = False):
    X, y = part
    return fn(X, *args) if x_only else fn(X, y, *args)


def local_client(workers: int | None, memory_limit: str):
    """A LocalCluster here (``workers`` processes, one thread each) and its client."""
    distributed = _distributed()
    import os

    n = workers or max(1, os.cpu_count() or 1)
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       memory_limit=memory_limit, dashboard_address=":0")
    return distributed.Client(cluster)


def connect(address: str, timeout: str = "10s"):
    """A client of the running scheduler at ``address`` (tcp://host:8786); one that does not
    answer within ``timeout`` is a located config error."""
    distributed = _distributed()
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach a dask scheduler at {address!r} ({type(exc).__name__}: {exc}); "
                          f"start one (dask scheduler) or set engine.scheduler: null for a LocalCluster",
                          where="engine.scheduler") from None
