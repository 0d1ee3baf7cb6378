"""The dask engine: the prepared rows in parts on the workers of a dask.distributed cluster.

Each part is a whole number of blocks of the reduction rule's grid, kept on the workers. A
LocalCluster's workers read their parts of a file of tiles (the stream engine's preparation)
themselves, as tasks: dask paces and spills them, and reads a lost worker's parts again.
Parts sent from here (a remote cluster, or X in memory) are kept on two workers, when there
are two, so a lost worker costs no data. dask schedules, moves and recomputes; neurocli only
says what to compute.

Full batch: every epoch sends (w, b) to the parts; each part returns its blocks' partials,
computed by the in-memory engine's own block function with the BLAS on one thread; the client
adds them in block order with the one reduction. So the bits are the in-memory engine's,
whatever the number of workers or which worker took which part.

Mini-batch: the data stays, the parameters travel. The client draws the epoch's order
(:func:`neurocli.engines.epoch_order`) and cuts the batches into stretches of whole runs (the
in-memory engine's runs of batches). One task steps a stretch with the in-memory engine's own
loop (:func:`neurocli.engines.memory.descend`), on the worker holding most of its rows; the few
rows of other parts (a shuffle block across a part's end) come from small tasks on those parts.
Each stretch takes the parameters and the epoch's sums from the one before (a chain of
futures) and passes them on; between stretches the client honours a divergence or a stop. A
stretch costs dask's scheduling, about 10 ms on a LocalCluster (its messages go in batches
every few ms), hence stretches of up to :data:`STRETCH_BATCHES` batches; parts of whole
shuffle blocks, so that the parameters seldom travel.

The optional ``dask`` extra: ``pip install "neurocli[dask]"``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from neurocli import neuron
from neurocli.engines.stream import release
from neurocli.engines import SHUFFLE_BLOCK_ROWS, BatchesDone, EpochSums, combine, compiled, memory, rows_per_block
from neurocli.errors import ConfigError
from neurocli.neuron import LossGrad

INSTALL = 'pip install "neurocli[dask]"'
# Bytes of X per part on a worker: large enough that a task's overhead is noise.
PART_BYTES = 64 << 20
# A mini-batch task steps at most this many batches of at most this many rows in all (and at
# least one run): its work (about 30 ms at batch 256, d = 32) against dask's 10 ms a task,
# against how long a stop request waits, and against the rows' indices it is sent.
STRETCH_BATCHES = 512
STRETCH_ROWS = 1 << 17
# The walk stays on its part while that part holds at least this share of a run's rows.
STAY_SHARE = 0.25
# Stretches submitted beyond the one whose result the client waits for: the chain never
# waits for the client.
AHEAD = 2


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"dask needs dask.distributed, an optional extra: {INSTALL}",
                          where="engine.kind") from None
    return distributed


def part_partials(X: np.ndarray, y: np.ndarray, w: np.ndarray, b, rows: int,
                  block_fn=memory.block_partials) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: the partials of a part's blocks (``rows`` rows each), by ``block_fn``
    (the client's :func:`neurocli.engines.memory.block_fn_for`), the BLAS held to one thread."""
    from threadpoolctl import threadpool_limits

    n_blocks = -(-X.shape[0] // rows)
    grad_parts = np.empty((n_blocks, X.shape[1]), dtype=np.result_type(X, w, y))
    sums = np.empty((n_blocks, 4), dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        block_fn(X, y, w, b, rows, range(n_blocks), grad_parts, sums)
    return grad_parts, sums


def _workers_compile(client) -> bool:
    """Whether every worker of the cluster has numba (the ``fast`` extra)."""
    import importlib.util

    found = client.run(lambda: importlib.util.find_spec("numba") is not None)
    return bool(found) and all(found.values())


def part_bounds(n: int, rows: int, part_rows: int, align: int | None = None) -> list[int]:
    """Where the parts start, and n: parts of about ``part_rows`` rows, each a whole number of
    the grid's blocks of ``rows``. With ``align`` (the shuffle's block, for mini-batch): parts of
    about a whole number of shuffle blocks, each ending at the grid's block boundary nearest a
    shuffle block's end, so a shuffle block lies in one part but for half a grid block."""
    if rows >= n:
        return [0, n]
    step = part_rows if align is None else max(1, (part_rows + align // 2) // align) * align
    ends = {(j * step + rows // 2) // rows * rows for j in range(1, -(-n // step) + 1)}
    return [0, *sorted(e for e in ends if 0 < e < n), n]


def any_active(X: np.ndarray, w: np.ndarray, b) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.any(neuron.active_mask(neuron.pre_activation(X, w, b))))


@dataclass
class Walk:
    """What travels from task to task in a mini-batch epoch: the parameters as they step (with
    the last step, for the gradient norm), the epoch's sums, the next batch, and whether a step
    diverged."""

    p: memory.Descent
    sums: EpochSums
    batch: int
    diverged: bool = False

    def copy(self) -> "Walk":
        """An own copy, for a task (no task changes its inputs, so dask may rerun any) and for
        the client: arrays numpy allocates (an unpickled one may sit at any address, even
        one not a multiple of 8, where numpy takes its slow paths)."""
        return Walk(copy.deepcopy(self.p), dataclasses.replace(self.sums), self.batch, self.diverged)


@dataclass(frozen=True)
class Stretch:
    """Batches ``first`` to ``last - 1`` of an epoch, whole runs (the first may be entered in its
    middle, on resume), whose rows are the epoch's rows ``start`` (slot 0 of the first run) to
    ``stop - 1``."""

    first: int
    last: int
    start: int
    stop: int


@dataclass(frozen=True)
class RunShape:
    """An epoch's runs, fixed on the client (``batches_per_run`` from its GATHER_BYTES) and sent
    with every task."""

    n: int
    n_features: int
    dtype: np.dtype
    batch_size: int
    batches_per_run: int

    def stretches(self, first_batch: int) -> Iterator[Stretch]:
        """The batches from ``first_batch`` on, in stretches of at most :data:`STRETCH_BATCHES`
        batches and :data:`STRETCH_ROWS` rows, at least one run each."""
        per_run, B = self.batches_per_run, self.batch_size
        runs = max(1, min(STRETCH_BATCHES // per_run, STRETCH_ROWS // (per_run * B)))
        n_batches, batch = -(-self.n // B), first_batch
        while batch < n_batches:
            first_run = batch // per_run
            last = min(n_batches, (first_run + runs) * per_run)
            yield Stretch(batch, last, first_run * per_run * B, min(last * B, self.n))
            batch = last

    def run_counts(self, stretch: Stretch, part: np.ndarray, n_parts: int) -> np.ndarray:
        """(runs, parts): how many of each run's rows each part holds, ``part`` naming the part
        of each of the stretch's rows from its first batch on."""
        run = (np.arange(stretch.first * self.batch_size, stretch.stop) - stretch.start) // self.run_rows
        return np.bincount(run * n_parts + part, minlength=(int(run[-1]) + 1) * n_parts).reshape(-1, n_parts)

    def cut(self, stretch: Stretch, on: list[int]) -> Iterator[tuple[Stretch, int]]:
        """The stretch cut where the part its runs are stepped on (``on``, per run) changes,
        each piece with its part."""
        first_run = stretch.start // self.run_rows
        edges = [0, *(np.flatnonzero(np.diff(on)) + 1).tolist(), len(on)]
        for a, z in zip(edges, edges[1:]):
            first = max(stretch.first, (first_run + a) * self.batches_per_run)
            last = min(stretch.last, (first_run + z) * self.batches_per_run)
            yield Stretch(first, last, (first_run + a) * self.run_rows, min(last * self.batch_size, self.n)), on[a]

    @property
    def run_rows(self) -> int:
        return self.batches_per_run * self.batch_size


class StretchRun(memory.BatchRun):
    """The runs of a stretch, stepped by the in-memory engine's own loop; only how a run's rows
    get into the run buffer (:meth:`load`) is this engine's.

    Why the bits are the in-memory engine's: the steps are the same code on the same values
    in buffers laid out the same way. Each run's rows are copied, byte for byte, just before
    its steps, into a run buffer of numpy's own like the in-memory engine's (the dtype,
    row-major, ``batches_per_run`` batches, batch j at slot ``j - first batch of its run``),
    so every step's numpy calls and BLAS calls see the same shapes, strides and values. Only
    the buffer's address differs, and a row-major batch's bits were measured not to depend on
    it (the in-memory engine itself gathers into a fresh buffer, or steps on a view of X, at
    whatever address each has); the tests hold the two engines together.

    ``sources``: ``(places, X, y, rows)``: rows ``rows`` of (X, y) go to the stretch's rows
    ``places`` (counted from its ``start``; slices, or indices in increasing order).
    """

    def __init__(self, shape: RunShape, stretch: Stretch, sources: list[tuple]):
        super().__init__(shape.n, shape.n_features, shape.dtype, shape.batch_size, shape.batches_per_run)
        self.start, self.sources = stretch.start, sources
        self.X_rows = np.empty((self.size, shape.n_features), dtype=shape.dtype)
        self.y_rows = np.empty(self.size, dtype=shape.dtype)

    def load(self, first: int, last: int) -> None:
        self.first_row = self.start_row(first)
        lo, hi = first * self.B - self.start, min(last * self.B, self.n) - self.start
        for places, X, y, rows in self.sources:
            i, j = _within(places, lo, hi)
            if i < j:
                self._put(_part(places, i, j, self.first_row - self.start), X, y, _part(rows, i, j))

    def _put(self, at, X: np.ndarray, y: np.ndarray, rows) -> None:
        """``X[rows]`` and ``y[rows]`` into the run buffer's rows ``at``, copied as records
        (:func:`_records`): one ``np.take`` straight into it where the places are consecutive
        and the rows are not, as the in-memory engine gathers."""
        for buffer, source in ((self.X_rows, X), (self.y_rows, y)):
            into, source = _records(buffer), _records(source)
            if isinstance(at, slice) and not isinstance(rows, slice):
                np.take(source, rows, out=into[at], mode="clip")  # clip: indices in range, no temporary
            else:
                into[at] = source[rows]


def _records(a: np.ndarray) -> np.ndarray:
    """The rows of an array as opaque records of their bytes: the same bytes, copied by numpy
    one memcpy a row at any address. (A part unpickled on a worker sits at any address, and
    numpy copies unaligned floats one by one: a gather 25x slower.) A column-major part (a
    full-batch engine's, asked for a mini-batch epoch all the same) is made row-major first."""
    a = np.ascontiguousarray(a)
    row = a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
    return a.view(np.dtype((np.void, row))).reshape(a.shape[0])


def _within(places, lo: int, hi: int) -> tuple[int, int]:
    """The entries ``i:j`` of ``places`` (a slice, or increasing indices) that lie in ``[lo, hi)``."""
    if isinstance(places, slice):
        size = places.stop - places.start
        return min(max(lo - places.start, 0), size), min(max(hi - places.start, 0), size)
    return int(np.searchsorted(places, lo)), int(np.searchsorted(places, hi))


def _part(s, i: int, j: int, minus: int = 0):
    """Entries ``i:j`` of a slice or an index array, less ``minus``."""
    if isinstance(s, slice):
        return slice(s.start + i - minus, s.start + j - minus)
    return s[i:j] - minus if minus else s[i:j]


def gather_rows(part, rows) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: a part's rows ``rows`` (indices or a slice) of X and y, as records
    (:func:`_records`), for a stretch stepped on another part's worker."""
    X, y = part
    return _records(X)[rows], _records(y)[rows]


def step_stretch(part, walk: Walk, here: tuple, taken: list, stretch: Stretch, shape: RunShape) -> Walk:
    """On a worker: a stretch's batches stepped by :func:`neurocli.engines.memory.descend`, each
    run's rows placed from this part (``here``: ``(places, rows)``) and from those gathered on
    other parts (``taken``: ``(places, (X, y))``). A diverged walk passes through."""
    if walk.diverged:
        return walk
    sources = [(here[0], *part, here[1])] + [(at, X, y, slice(0, len(y))) for at, (X, y) in taken]
    walk = walk.copy()
    walk.batch, walk.diverged = memory.descend(StretchRun(shape, stretch, sources), walk.p, stretch.first,
                                               stretch.last, walk.sums, _never)
    return walk


def _never() -> bool:
    return False


def _stays(counts: np.ndarray, at: int | None) -> list[int]:
    """The part the walk is on for each run, from ``counts`` (runs x parts: each run's rows in
    each part) and the part it starts on: it stays while its part holds at least
    :data:`STAY_SHARE` of a run's rows, else moves to the part holding most. (Moving at every
    change of the part holding most would go back and forth across a shuffle block split
    evenly between two parts, a task a run.)"""
    on = []
    for c in counts:
        if at is None or c[at] < STAY_SHARE * c.sum():
            at = int(c.argmax())
        on.append(at)
    return on


def _as_slice(a: np.ndarray):
    """An index array as the slice it is, when its entries are consecutive and increasing."""
    if len(a) and a[-1] - a[0] == len(a) - 1 and bool((np.diff(a) == 1).all()):
        return slice(int(a[0]), int(a[-1]) + 1)
    return a


class DaskEngine:
    """The :class:`neurocli.engines.Engine` of a training set in parts on a dask cluster.

    X : (n_samples, n_features), y : (n_samples,), cut here into parts and sent to the
    workers; client : a ``distributed.Client``; the rest as
    :class:`neurocli.engines.memory.MemoryEngine`. A mini-batch run's X is row-major, as
    ``prepare`` lays it out (in file order the in-memory engine steps on views of X itself).
    ``part_bytes``: bytes of X per part; ``block_bytes``: the grid's block size, as in
    :func:`neurocli.engines.rows_per_block` (the tests make many blocks of small data);
    ``owns_client``: :meth:`close` closes the client.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, client, batch_size: int, shuffle: bool, seed: int,
                 epochs: int, lr: float, part_bytes: int = PART_BYTES, block_bytes: int | None = None,
                 owns_client: bool = False):
        n, d = X.shape
        self.client, self._owns_client = client, owns_client
        self.n_samples, self.n_features = n, d
        self.dtype = X.dtype
        self.batch_size, self.lr = batch_size, lr
        self.n_batches = -(-n // batch_size)
        self.rows = rows_per_block(n, d, X.dtype, block_bytes)
        # the compiled kernels where this process and every worker have them (the workers run what
        # the client chose: a worker without the fast extra would fail the task)
        self._fast = compiled.wanted(n, d, X.dtype) and _workers_compile(client)
        self._block_fn = memory.block_fn_for(n, d, X.dtype, self.rows) if self._fast else memory.block_partials
        per_part = max(1, part_bytes // max(1, self.rows * d * X.dtype.itemsize)) * self.rows
        bounds = part_bounds(n, self.rows, per_part, SHUFFLE_BLOCK_ROWS if batch_size < n else None)
        self._bounds = np.array(bounds)
        # the one-block grid of small data is computed by neuron.loss_and_gradient on the very array
        # the in-memory engine would use (its bits can depend on X's strides); many blocks go out
        self._small = (X, y) if self.rows >= n else None
        # each part in the layout its reads want: rows gathered, or read by the compiled row kernel;
        # else blocks copied column-major
        by_rows = batch_size < n or (self._fast and compiled.reads_rows(d, X.dtype))
        layout = np.ascontiguousarray if by_rows else np.asfortranarray
        path = _path_for_workers(X, client)
        if path is not None:  # each worker reads its parts from the file: dask paces and spills them
            self._parts = [client.submit(_read_part, path, X.shape, X.dtype, X.rows, lo, hi,
                                         np.ascontiguousarray(y[lo:hi]), pure=False)
                           for lo, hi in zip(bounds, bounds[1:])]
            _distributed().wait(self._parts)  # a part a lost worker held is read again: no second copy
        else:
            self._parts = [_sent(client, layout, X, y, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
            if len(client.scheduler_info()["workers"]) > 1:
                client.replicate(self._parts, n=2)  # a lost worker loses no part
        shuffled = shuffle and batch_size < n
        self._shuffles = memory.ShuffleAhead(seed, n, epochs) if shuffled else None

    def loss_and_gradient(self, w: np.ndarray, b) -> LossGrad:
        if self._small is not None:  # a grid of one block (under 8 MB): here, as the in-memory engine does
            return neuron.loss_and_gradient(*self._small, w, b)
        futures = [self.client.submit(_on_part, part_partials, part, w, b, self.rows, self._block_fn, pure=False)
                   for part in self._parts]
        results = self.client.gather(futures)  # in part order: the blocks in global order
        return combine(np.concatenate([g for g, _ in results]), np.concatenate([s for _, s in results]),
                       self.n_samples)

    def any_active(self, w: np.ndarray, b) -> bool:
        futures = [self.client.submit(_on_part, any_active, part, w, b, pure=False, x_only=True)
                   for part in self._parts]
        return any(self.client.gather(futures))

    def start(self, epoch: int) -> None:
        if self._shuffles is not None and epoch < self._shuffles.epochs:
            self._shuffles.draw(epoch)

    def minibatch_epoch(self, epoch: int, w: np.ndarray, b, first_batch: int, sums: EpochSums,
                        stop_requested: Callable[[], bool]) -> BatchesDone:
        """:func:`neurocli.engines.memory.minibatch_epoch`'s steps, stretch by stretch on the
        workers holding their rows (the module's docstring); a divergence or a stop request
        ends the epoch at the end of a stretch (data of one block: the whole epoch here).
        ``sums`` gains each batch's errors."""
        order = None if self._shuffles is None else self._shuffles.take(epoch)
        if self._small is not None:
            return memory.minibatch_epoch(*self._small, order, self.batch_size, w, b, self.lr, first_batch, sums,
                                          stop_requested)
        n, d, B = self.n_samples, self.n_features, self.batch_size
        shape = RunShape(n, d, self.dtype, B, memory.batches_per_run(self.n_batches, B, d, self.dtype))
        walk = Walk(memory.Descent(w, b, self.lr, self._fast), dataclasses.replace(sums), first_batch)
        walk = self._walk(walk, self._plan(shape, first_batch, order), shape, stop_requested)
        vars(sums).update(vars(walk.sums))
        return memory.batches_done(walk.p, walk.batch, sums, walk.diverged, self.dtype)

    def _walk(self, walk: Walk, plan: Iterator[tuple], shape: RunShape, stop_requested: Callable[[], bool]) -> Walk:
        """The stretches' tasks, each taking the walk from the one before, :data:`AHEAD` of them
        submitted beyond the one waited for. After each stretch, a diverged step or a requested
        stop ends the walk there, the tasks ahead cancelled."""
        holders = self._holders()
        ahead: deque = deque()
        latest = walk  # the walk, or the future of it, that the next stretch takes
        while True:
            for stretch, main, pieces in itertools.islice(plan, AHEAD + 1 - len(ahead)):
                latest = self._submit(latest, stretch, main, pieces, shape, holders)
                ahead.append(latest)
            if not ahead:
                return walk
            walk = ahead.popleft().result().copy()
            if walk.diverged or (walk.batch < self.n_batches and stop_requested()):
                self.client.cancel(list(ahead))
                return walk

    def _holders(self) -> list[list[str] | None]:
        """The workers holding each part now (None: none, dask then says the part is lost). A
        mini-batch task is held to them: dask would otherwise move a whole part to a free worker
        for a task that reads a few of its rows."""
        who = self.client.who_has(self._parts)
        return [list(who[part.key]) or None for part in self._parts]

    def _submit(self, walk, stretch: Stretch, main: int, pieces: dict, shape: RunShape,
                holders: list[list[str] | None]):
        """A stretch's tasks: one on each other part holding some of its rows, taking them out,
        then the step on part ``main``, taking ``walk``; the step's future."""
        taken = [(at, self.client.submit(gather_rows, self._parts[p], rows, workers=holders[p], pure=False))
                 for p, (at, rows) in pieces.items() if p != main]
        return self.client.submit(step_stretch, self._parts[main], walk, pieces[main], taken, stretch, shape,
                                  workers=holders[main], pure=False)

    def _plan(self, shape: RunShape, first_batch: int, order: np.ndarray | None) -> Iterator[tuple]:
        """The epoch's stretches from ``first_batch`` on, each with the part that steps it and
        where its rows are (:meth:`_pieces`): :meth:`RunShape.stretches`, cut where the walk
        moves to another part (:func:`_stays`)."""
        B, at = shape.batch_size, None  # the part the walk is on
        for stretch in shape.stretches(first_batch):
            lo = stretch.first * B
            rows = np.arange(lo, stretch.stop) if order is None else order[lo:stretch.stop]
            part = np.searchsorted(self._bounds, rows, side="right") - 1
            on = _stays(shape.run_counts(stretch, part, len(self._parts)), at)
            at = on[-1]
            for cut, main in shape.cut(stretch, on):
                i, j = cut.first * B - lo, cut.stop - lo
                yield cut, main, self._pieces(rows[i:j], part[i:j], cut.first * B - cut.start)

    def _pieces(self, rows: np.ndarray, part: np.ndarray, at: int) -> dict[int, tuple]:
        """Where a stretch's rows ``rows`` (in parts ``part``) are: per part holding some, their
        places in the stretch (from ``at``) and their rows in the part, each a slice where it
        is one."""
        held = np.flatnonzero(np.bincount(part, minlength=len(self._parts)))
        if len(held) == 1:
            p = int(held[0])
            return {p: (slice(at, at + len(rows)), _as_slice(rows - self._bounds[p]))}
        return {int(p): (_as_slice(at + np.flatnonzero(part == p)), _as_slice(rows[part == p] - self._bounds[p]))
                for p in held}

    def close(self) -> None:
        """Let go of the parts and the shuffle's helper; a client of the engine's own is closed,
        and a LocalCluster it started shut down (a running scheduler's cluster stays)."""
        if self._shuffles is not None:
            self._shuffles.close()
        self.client.cancel(self._parts)
        if self._owns_client:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()


def _on_part(fn, part, *args, x_only: bool = False):
    X, y = part
    return fn(X, *args) if x_only else fn(X, y, *args)


def _path_for_workers(X, client) -> str | None:
    """Where the workers of a LocalCluster can open X's file of tiles themselves (this
    process's descriptor of it, on Linux); None for any other X or cluster, whose parts are
    sent from here."""
    import os

    from neurocli.engines.stream import TiledColumns

    if not isinstance(X, TiledColumns) or not isinstance(client.cluster, _distributed().LocalCluster):
        return None
    path = f"/proc/{os.getpid()}/fd/{X.fd}"
    return path if os.path.exists(path) else None


def _read_part(path: str, shape, dtype, rows: int, lo: int, hi: int, y: np.ndarray):
    """On a worker: rows lo to hi - 1 of the file of tiles at ``path``, column-major, and their y.
    A task's result, so the worker's memory manager counts it, pauses new reads and spills."""
    from neurocli.engines.stream import TiledColumns

    with open(path, "rb") as fh:
        return np.asfortranarray(TiledColumns(fh, shape, dtype, rows)[lo:hi]), y


def _sent(client, layout, X, y, lo: int, hi: int):
    """Rows lo to hi - 1 sent to a worker as one part (laid out by ``layout``): one part at a
    time, so that X read from a mapped file (the stream engine's preparation) is never held
    whole here; the part's pages are handed back once it is sent."""
    [part] = client.scatter([(layout(X[lo:hi]), np.ascontiguousarray(y[lo:hi]))], hash=False)
    release(X)
    return part


def local_client(workers: int | None, memory_limit: str):
    """A LocalCluster here (``workers`` processes, one thread each) and its client. Its active
    memory manager is off: it would drop the second copy of every part within seconds, and
    with it the part a lost worker held."""
    distributed = _distributed()
    import os

    import dask

    n = workers or max(1, os.cpu_count() or 1)
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
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
