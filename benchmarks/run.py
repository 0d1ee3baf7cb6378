"""neurocli's benchmark suite: one command, one table of medians and ratios measured side by side.

    python benchmarks/run.py            # the full sizes (several minutes, ~2 GB of RAM and temp disk)
    python benchmarks/run.py --quick    # tiny sizes, one round: checks that the suite still runs
    python benchmarks/run.py --write    # the full sizes, and the table written to benchmarks/RESULTS.md

Every timed case is repeated in interleaved rounds (each variant once per round, so a noisy
neighbour hits all of them alike) and reported as the median. Each row gives the ratio to its
floor (the cheapest thing that must happen anyway, e.g. one ``X @ w``, one pass over X) and to
each peer measured in the same run. PyTorch and polars are peers when installed, skipped with a
note otherwise; neither is a dependency of neurocli. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import neurocli  # first, so OpenBLAS starts with the thread timeout neurocli's command line uses

import numpy as np

from neurocli import cache, engines, neuron
from neurocli.engines import compiled, memory
from neurocli.config import TrainingConfig
from neurocli.data import read_table
from neurocli.train import Trainer, TrainState

ROOT = Path(__file__).resolve().parent.parent
ROWS: list[tuple[str, str, str, str]] = []  # case, median, vs floor, vs peers
NOTES: list[str] = []


def optional(name):
    # A peer's idle OpenMP threads must not spin between its runs and steal the cores the next
    # variant in the same round is timed on.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return __import__(name)
    except ImportError:
        NOTES.append(f"{name} not installed: its comparisons are skipped")
        return None


def interleaved(variants: dict, rounds: int) -> dict:
    """Median seconds of each variant, measured in ``rounds`` interleaved rounds."""
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def row(case, seconds, floor=None, floor_name="", peers=()):
    vs_floor = f"{seconds / floor:.2f}x {floor_name}" if floor else ""
    vs_peers = ", ".join(f"{p / seconds:.1f}x faster than {name}" if p >= seconds else f"{seconds / p:.1f}x slower than {name}"
                         for name, p in peers)
    ROWS.append((case, fmt_s(seconds), vs_floor, vs_peers))


def fmt_s(s):
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def machine() -> list[str]:
    facts = [f"neurocli {neurocli.__version__}", f"cores: {os.cpu_count()}", f"python {platform.python_version()}",
             f"numpy {np.__version__}",
             f"{platform.machine()} {platform.system()}"]
    try:
        from threadpoolctl import threadpool_info
        for lib in threadpool_info():
            if lib.get("user_api") == "blas":
                facts.append(f"BLAS: {lib['internal_api']} {lib.get('version')} ({lib.get('architecture')} kernel), "
                             f"{lib['num_threads']} threads")
    except ImportError:
        facts.append("BLAS: threadpoolctl not installed, BLAS facts unknown")
    return facts


# --- 1. the full-batch gradient ---

def _blas_calls_of_blocks(X, y, w, b, rows, blocks, grad_parts, sums):
    """The fused kernel's block walk with only its two BLAS calls per block, ``z = X_k w`` and
    ``X_k^T z`` (no bias, mask, residual or sums): what the blocked form costs before any
    elementwise work."""
    z = np.empty(rows, dtype=grad_parts.dtype)
    for k in blocks:
        Xk = X[k * rows:(k + 1) * rows]
        np.matmul(Xk, w, out=z[:Xk.shape[0]])
        np.matmul(z[:Xk.shape[0]], Xk, out=grad_parts[k])
        sums[k] = 0.0


def blas_calls_only(X, y, w, b):
    """The in-memory engine's own grid and workers, running only the two BLAS calls per block."""
    n, d = X.shape
    rows = engines.rows_per_block(n, d, X.dtype)
    n_blocks = -(-n // rows)
    memory.map_blocks(_blas_calls_of_blocks, X, y, w, b, rows,
                      np.empty((n_blocks, d), dtype=X.dtype), np.empty((n_blocks, 4)))


def numpy_only(fn):
    """``fn`` with the compiled path off (``NEUROCLI_FAST=off``): the numpy kernels, as without the extra."""
    def run():
        saved = os.environ.get("NEUROCLI_FAST")
        os.environ["NEUROCLI_FAST"] = "off"
        try:
            return fn()
        finally:
            if saved is None:
                os.environ.pop("NEUROCLI_FAST")
            else:
                os.environ["NEUROCLI_FAST"] = saved
    return run


def fast_on() -> bool:
    """Whether the compiled path runs here (the ``fast`` extra installed and not turned off)."""
    return compiled.available()


def gradient(sizes, rounds, torch, jax):
    """Full-batch training holds X column-major (data.read_table(layout="F")), so its kernel
    is timed on that layout; the floor is one ``X @ w`` on row-major X, with
    ``X @ w`` on the column-major X beside it. Peers get the very same arrays."""
    for n, d in sizes:
        for dtype in (np.float64, np.float32):
            rng = np.random.default_rng(0)
            X = rng.standard_normal((n, d)).astype(dtype)
            w = (rng.standard_normal(d) / math.sqrt(d)).astype(dtype)
            y = np.maximum(X @ w + 0.5, 0).astype(dtype) + rng.standard_normal(n).astype(dtype) * 0.1
            b = dtype(0.1)
            Xf = np.asfortranarray(X)
            variants = {"floor": lambda: X @ w,
                        "floor F": lambda: Xf @ w,
                        "fused F": numpy_only(lambda: memory.loss_and_gradient(Xf, y, w, b)),
                        "blas only F": lambda: blas_calls_only(Xf, y, w, b),
                        "fused C": numpy_only(lambda: memory.loss_and_gradient(X, y, w, b)),
                        "reference": lambda: neuron.loss_and_gradient(X, y, w, b)}
            if torch is not None:
                def autograd(A):
                    tX, ty = torch.from_numpy(A), torch.from_numpy(y)

                    def run():
                        tw = torch.from_numpy(w.copy()).requires_grad_()
                        tb = torch.tensor(float(b), dtype=tX.dtype, requires_grad=True)
                        loss = ((torch.relu(tX @ tw + tb) - ty) ** 2).mean()
                        loss.backward()
                        return loss.item(), tw.grad, tb.grad
                    return run

                def manual():
                    tX, ty, tw = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(w)
                    z = tX @ tw + float(b)
                    r = torch.relu(z) - ty
                    g = r * (z > 0)
                    return (r @ r).item(), tX.T @ g, g.sum()

                variants["torch autograd"] = autograd(X)
                variants["torch autograd F"] = autograd(Xf)
                variants["torch manual"] = manual
            compiled_grid = fast_on() and compiled.used_by(n, d, dtype, n) == "full-batch"
            # the layout training gives the compiled kernel: column-major, or row-major for wide data
            by_rows = compiled.reads_rows(d, dtype)
            Xt, layout = (X, "row-major") if by_rows else (Xf, "column-major")
            if compiled_grid:
                compiled.warm(dtype, minibatch=False, by_rows=by_rows)
                variants["compiled"] = lambda: memory.loss_and_gradient(Xt, y, w, b)
            if jax is not None:
                variants["jax jit"] = _jax_gradient(jax, X, y, w, b)
            med = interleaved(variants, rounds)
            ref, fast = neuron.loss_and_gradient(X, y, w, b), numpy_only(lambda: memory.loss_and_gradient(Xf, y, w, b))()
            err = float(np.max(np.abs(fast.grad_w - ref.grad_w)) / np.max(np.abs(ref.grad_w)))
            compiled_err = None
            if compiled_grid:
                got = memory.loss_and_gradient(Xt, y, w, b)
                compiled_err = float(np.max(np.abs(got.grad_w - ref.grad_w)) / np.max(np.abs(ref.grad_w)))
            name = f"gradient {np.dtype(dtype).name} N={n:,} d={d}"
            torch_peers = [(k, med[k]) for k in ("torch autograd", "torch autograd F", "torch manual") if k in med]
            autograd_peers = [kv for kv in torch_peers if kv[0].startswith("torch autograd")]
            best_torch = min(autograd_peers, key=lambda kv: kv[1]) if autograd_peers else None  # its better layout
            # what loss_and_gradient runs here: the fused blocks, or the reference when X is
            # small or a block would hold too few rows (engines.uses_blocks)
            path = "fused" if engines.uses_blocks(n, d, dtype) else "reference path (X too small or too wide for blocks)"
            jax_peer = [("jax jit", med["jax jit"])] if "jax jit" in med else []
            if compiled_grid:
                row(f"{name}: compiled, {layout} X (training with the fast extra) [target <= 1.2x X@w]",
                    med["compiled"], med["floor"], "X@w",
                    [("numpy kernel", med["fused F"])] + ([best_torch] if best_torch else []) + jax_peer)
            else:
                NOTES.append(f"{name}: the compiled path does not run here "
                             f"({'a grid of one block: the numpy reference' if fast_on() else 'numba not installed'})")
            row(f"{name}: numpy {path}, column-major X (training without the extra)", med["fused F"], med["floor"],
                "X@w", [("reference", med["reference"])] + ([best_torch] if best_torch else []) + jax_peer)
            row(f"{name}: {path}, row-major X", med["fused C"], med["floor"], "X@w")
            if path == "fused":
                row(f"{name}: fused blocks' two BLAS calls alone (no elementwise work), column-major X",
                    med["blas only F"], med["floor"], "X@w")
            row(f"{name}: reference (row-major)", med["reference"], med["floor"], "X@w")
            row(f"{name}: X@w on the column-major X", med["floor F"], med["floor"], "X@w")
            for k, v in torch_peers:
                row(f"{name}: {k}{' (on the column-major X)' if k.endswith(' F') else ''}".replace(" F (", " ("),
                    v, med["floor"], "X@w")
            NOTES.append(f"{name}: one X@w = {fmt_s(med['floor'])} ({X.nbytes / med['floor'] / 1e9:.1f} GB/s), on the "
                         f"column-major X {fmt_s(med['floor F'])}; {path} (column-major) = "
                         f"{med['fused F'] / med['floor F']:.2f}x that; its max |diff| / max |grad_w| against the "
                         f"reference on row-major X = {err:.1e}"
                         + (f"; the compiled kernel's = {compiled_err:.1e}" if compiled_err is not None else ""))
            X = Xf = Xt = None  # free before the next size


def _jax_gradient(jax, X, y, w, b):
    """JAX's ``jit`` of the loss and its autodiff gradient, on the same arrays (a peer)."""
    jnp = jax.numpy
    tX, ty = jnp.asarray(X), jnp.asarray(y)

    @jax.jit
    def loss_grad(tw, tb):
        return jax.value_and_grad(lambda w_, b_: jnp.mean((jax.nn.relu(tX @ w_ + b_) - ty) ** 2), (0, 1))(tw, tb)

    tw, tb = jnp.asarray(w), jnp.asarray(b)
    jax.block_until_ready(loss_grad(tw, tb))  # compiled once, outside the timing
    return lambda: jax.block_until_ready(loss_grad(tw, tb))


# --- 2. mini-batch SGD ---

def minibatch(n, d, epochs, rounds, torch):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal(d) + 1.0, 0)
    empty_X, empty_y = np.empty((0, d)), np.empty(0)

    Xf = np.asfortranarray(X)  # full-batch training holds X column-major, mini-batches row-major

    epoch_s = {}  # per variant, each epoch's time after a run's first (which holds the run's set-up)

    def train(batch_size, data=X, key=None):
        cfg = TrainingConfig(epochs=epochs, learning_rate=0.01, batch_size=batch_size, shuffle=True, early_stopping=None)
        t = Trainer(data, y, empty_X, empty_y, cfg, 0, TrainState(w=np.full(d, 0.1), b=np.float64(1.0)))
        last, times = time.perf_counter(), []
        for _ in t.run():
            now = time.perf_counter()
            times.append(now - last)
            last = now
        if key is not None:
            epoch_s.setdefault(key, []).extend(times[1:])
        return t.state

    # The step's numpy calls alone: each epoch one gather of its rows (the permutation drawn
    # beforehand, as training draws it on a helper thread), then per batch z = X_b w, + b, the
    # mask, max(0, z), - y, * m, X_b^T g, sum g, the scale and the update, and nothing else (no
    # loss or metrics, no overflow checks, no state): what numpy's per-call cost leaves.
    B = 256
    Xs, ys = np.empty_like(X), np.empty_like(y)
    Z, R, G, M = np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=bool)
    batches = [tuple(a[s:s + B] for a in (Xs, ys, Z, R, M, G)) for s in range(0, n, B)]
    orders = [np.random.default_rng([0, 3, e]).permutation(n) for e in range(epochs)]

    def calls_only():
        w, b, grad = np.full(d, 0.1), 1.0, np.empty(d)
        for order in orders:
            np.take(X, order, axis=0, out=Xs, mode="clip")
            np.take(y, order, out=ys, mode="clip")
            for Xb, yb, z, r, m, g in batches:
                np.matmul(Xb, w, out=z)
                np.add(z, b, out=z)
                np.greater(z, 0, out=m)
                np.maximum(z, 0, out=r)
                np.subtract(r, yb, out=r)
                np.multiply(r, m, out=g)
                np.matmul(g, Xb, out=grad)
                g_sum = float(np.add.reduce(g))
                np.multiply(grad, -0.01 * 2.0 / len(yb), out=grad)
                np.add(w, grad, out=w)
                b -= 0.01 * 2.0 / len(yb) * g_sum

    variants = {"full": numpy_only(lambda: train(None, Xf, "full")), "mini": numpy_only(lambda: train(256, X, "mini")),
                "calls": calls_only}
    fast = fast_on() and compiled.used_by(n, d, X.dtype, 256) == "mini-batch"
    if fast:
        compiled.warm(X.dtype, minibatch=True)
        if compiled.used_by(n, d, X.dtype, n) == "full-batch":
            compiled.warm(X.dtype, minibatch=False)
        variants["full compiled"] = lambda: train(None, Xf, "full compiled")
        variants["mini compiled"] = lambda: train(256, X, "mini compiled")
    if torch is not None:
        tX, ty = torch.from_numpy(X), torch.from_numpy(y)

        def torch_slicing():
            gen = torch.Generator().manual_seed(0)
            tw = torch.full((d,), 0.1, dtype=tX.dtype, requires_grad=True)
            tb = torch.tensor(1.0, dtype=tX.dtype, requires_grad=True)
            for _ in range(epochs):
                order = torch.randperm(n, generator=gen)
                for s in range(0, n, 256):
                    idx = order[s:s + 256]
                    loss = ((torch.relu(tX[idx] @ tw + tb) - ty[idx]) ** 2).mean()
                    loss.backward()
                    with torch.no_grad():
                        tw -= 0.01 * tw.grad
                        tb -= 0.01 * tb.grad
                        tw.grad = None
                        tb.grad = None

        variants["torch slicing"] = torch_slicing
    med = interleaved(variants, rounds)
    a, b = numpy_only(lambda: train(256))(), numpy_only(lambda: train(256))()
    same = np.array_equal(a.w, b.w) and a.b == b.b
    peers = [("torch slicing", med["torch slicing"] / epochs)] if "torch slicing" in med else []

    def running(k):  # an epoch once the run is under way: the median of every round's epochs after its first
        return statistics.median(epoch_s[k])

    def means(*ks):
        return "; mean of a run of {} epochs: {}".format(epochs, ", ".join(f"{k} {fmt_s(med[k] / epochs)}" for k in ks))

    if fast:
        full = "full compiled" if "full compiled" in med else "full"
        row(f"mini-batch epoch N={n:,} d={d} batch 256, shuffled, compiled, once running [target <= 1.5x the "
            f"full-batch epoch; >= 20x faster than torch slicing]", running("mini compiled"), running(full),
            "compiled full-batch epoch", peers + [("numpy epoch", running("mini"))])
        row(f"full-batch epoch N={n:,} d={d}, compiled, once running", running(full), running("full"),
            "numpy full-batch epoch")
        NOTES.append(f"mini-batch N={n:,} d={d}" + means("mini compiled", full))
        c, e = train(256), train(256)
        NOTES.append(f"mini-batch, compiled: two runs with the same seed "
                     f"{'are' if np.array_equal(c.w, e.w) and c.b == e.b else 'are NOT'} bit-identical; "
                     f"against numpy's, max |w diff| / max |w| = {np.max(np.abs(c.w - a.w)) / np.max(np.abs(a.w)):.1e}")
    row(f"mini-batch epoch N={n:,} d={d} batch 256, shuffled, numpy, once running", running("mini"), running("full"),
        "full-batch epoch", peers + [("the step's numpy calls alone", med["calls"] / epochs)])
    row(f"full-batch epoch N={n:,} d={d}, numpy, once running", running("full"))
    row(f"mini-batch epoch N={n:,} d={d}: the step's numpy calls alone (one gather, no metrics, checks or state)",
        med["calls"] / epochs, running("full"), "full-batch epoch")
    NOTES.append(f"mini-batch N={n:,} d={d}, numpy" + means("mini", "full"))
    NOTES.append(f"mini-batch: two runs with the same seed {'are' if same else 'are NOT'} bit-identical")


# --- 3. loading ---

def write_csv(path: Path, n: int, d: int) -> None:
    rng = np.random.default_rng(2)
    header = ",".join([f"x{j}" for j in range(d)] + ["y"]) + "\n"
    with open(path, "w") as fh:
        fh.write(header)
        for s in range(0, n, 50_000):
            block = np.round(rng.standard_normal((min(50_000, n - s), d + 1)) * 100, 6)
            block[:, -1] = np.abs(block[:, -1])
            np.savetxt(fh, block, delimiter=",", fmt="%.6f")


def loading(n, d, rounds, tmp: Path, polars):
    import pandas as pd

    path = tmp / "data.csv"
    write_csv(path, n, d)
    mb = path.stat().st_size / 1e6
    cache_dir = tmp / "cache"
    os.environ["NEUROCLI_CACHE_DIR"] = str(cache_dir)
    opts = dict(target="y", features=None, missing="error", delimiter=",", layout="F")  # as full-batch training reads
    table = read_table(path, **opts)
    npy = tmp / "data.npy"
    np.save(npy, np.column_stack([table.X, table.y]))

    def cached():
        return cache.read_table_cached(path, **opts)

    cached()  # fill the cache
    variants = {"neurocli": lambda: read_table(path, **opts),
                "pandas": lambda: pd.read_csv(path, engine="c").to_numpy(dtype=np.float64),
                "cached": cached,
                "np.load": lambda: np.load(npy)}
    if polars is not None:
        variants["polars"] = lambda: polars.read_csv(path).to_numpy().astype(np.float64, copy=False)
    med = interleaved(variants, rounds)
    peers = [("pandas C engine", med["pandas"])] + ([("polars", med["polars"])] if "polars" in med else [])
    rate = lambda k: f"{mb / med[k]:.0f} MB/s"  # noqa: E731
    row(f"CSV parse + validation, {mb:.0f} MB ({n:,} x {d + 1}) [{rate('neurocli')}]", med["neurocli"],
        med["pandas"], "pandas", peers[1:])
    row(f"pandas read_csv C engine [{rate('pandas')}]", med["pandas"])
    if "polars" in med:
        row(f"polars read_csv [{rate('polars')}]", med["polars"])
    row(f"second run: served from the cache, the entry mapped (its pages read later, by training) "
        f"[{rate('cached')}]", med["cached"], med["np.load"], "np.load", [("the parse", med["neurocli"])])
    row(f"np.load of the same data as .npy [{rate('np.load')}]", med["np.load"])
    load_as_seen(path, npy, tmp, rounds, lambda: pd.read_csv(path, engine="c").to_numpy(dtype=np.float64))
    return path


def _load_s(config: Path, cache_dir: Path) -> float:
    """timing.load_s of one `neurocli train --json` process (one epoch) with this cache folder."""
    import json

    # the compiled kernels' machine code in one folder for every run: a fresh data cache need not compile
    compiled_code = str(config.parent / "compiled-code")
    p = subprocess.run([sys.executable, "-m", "neurocli", "train", str(config), "--json", "-q"],
                       capture_output=True, text=True,
                       env={**os.environ, "NEUROCLI_CACHE_DIR": str(cache_dir), "NUMBA_CACHE_DIR": compiled_code})
    if p.returncode != 0:
        raise SystemExit(f"train failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["timing"]["load_s"]


def load_as_seen(path: Path, npy: Path, tmp: Path, rounds: int, pandas_read):
    """What `neurocli train --json` reports as timing.load_s (config, parse, checks, split,
    standardization), a first run's (an empty cache folder each time) and a cached run's,
    in rounds interleaved with the bare pandas read and np.load of the same data."""
    config = tmp / "load.yaml"
    config.write_text(f"data: {{path: {path}, target: y, standardize: true, validation_fraction: 0.2}}\n"
                      f"training: {{epochs: 1, learning_rate: 0.001}}\noutput: {{dir: {tmp / 'load-runs'}}}\n")
    filled, loads = tmp / "load-cache", {"first": [], "cached": []}
    _load_s(config, filled)

    def first():
        fresh = Path(tempfile.mkdtemp(prefix="load-cache-", dir=tmp))
        loads["first"].append(_load_s(config, fresh))
        shutil.rmtree(fresh, ignore_errors=True)

    med = interleaved({"pandas": pandas_read, "first": first, "np.load": lambda: np.load(npy),
                       "cached": lambda: loads["cached"].append(_load_s(config, filled))}, rounds)
    first_s, cached_s = statistics.median(loads["first"]), statistics.median(loads["cached"])
    row("first run, what train --json waits for (load_s): parse, checks, split, standardize; "
        "its entry written as it trains [target <= 1.25x pandas]", first_s, med["pandas"], "pandas",
        [("pandas read_csv", med["pandas"])])
    row("cached run, what train --json waits for (load_s): the prepared data mapped, its pages read by the "
        "first epoch [target >= 5x faster than pandas]", cached_s, med["np.load"], "np.load (the floor)",
        [("pandas read_csv", med["pandas"])])


def peak_memory(path: Path, tmp: Path, n: int, d: int):
    """Peak RSS of `neurocli train` runs, against the float64 size of the data, via /usr/bin/time -v."""
    if not Path("/usr/bin/time").exists():
        NOTES.append("peak memory skipped: /usr/bin/time not found")
        return
    data_mb = n * (d + 1) * 8 / 1e6
    for name, extra in [("full batch, float64, validation split, standardized", []),
                        ("mini-batch 256, float32", ["--set", "training.batch_size=256", "--set", "training.dtype=float32"])]:
        cfg = tmp / "bench.yaml"
        cfg.write_text(f"data: {{path: {path}, target: y, standardize: true, validation_fraction: 0.2}}\n"
                       f"training: {{epochs: 3, learning_rate: 0.01}}\noutput: {{dir: {tmp / 'runs'}}}\n")
        cases = [("parse", {"NEUROCLI_CACHE": "off"}), ("cached", {})]
        if fast_on():  # the compiler's own memory (about 180 MB), against the same runs without it
            cases += [("parse, compiled path off", {"NEUROCLI_CACHE": "off", "NEUROCLI_FAST": "off"}),
                      ("cached, compiled path off", {"NEUROCLI_FAST": "off"})]
        for label, env in cases:
            if label.startswith("cached"):  # fill the cache first
                subprocess.run([sys.executable, "-m", "neurocli", "train", str(cfg), "-q", *extra],
                               capture_output=True, env={**os.environ})
            t0 = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "neurocli", "train", str(cfg), "-q", *extra],
                               capture_output=True, text=True, env={**os.environ, **env})
            wall = time.perf_counter() - t0
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
            if p.returncode != 0 or not m:
                NOTES.append(f"peak memory run failed ({name}, {label}): {p.stderr.strip().splitlines()[-1:]}")
                continue
            peak = int(m.group(1)) / 1e3
            ROWS.append((f"peak RSS, train {name}, {label}", f"{peak:.0f} MB",
                         f"{peak / data_mb:.2f}x data ({data_mb:.0f} MB float64)", f"wall {wall:.1f} s"))


# --- 4. beyond memory: formats and engines ---

def write_data_set(tmp: Path, n: int, d: int) -> tuple[Path, Path, float]:
    """The same random values as a CSV (written by pyarrow: fast) and converted to Parquet as a
    user would (pyarrow's CSV reader, then its Parquet writer); returns the paths and the
    seconds of the conversion."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    X = np.round(rng.standard_normal((n, d)) * 100, 6)
    y = np.abs(X[:, 0] * 0.3 + 2 * X[:, 1]) + 1
    columns = {f"x{j}": X[:, j] for j in range(d)} | {"y": y}
    del X
    csv = tmp / "engines.csv"
    pacsv.write_csv(pa.table(columns), csv)
    del columns
    parquet = tmp / "engines.parquet"
    t0 = time.perf_counter()
    pq.write_table(pacsv.read_csv(csv), parquet)
    return csv, parquet, time.perf_counter() - t0


def _train_process(config: Path, kind: str, env: dict, *sets: str) -> dict | None:
    """One `neurocli train --json` process: its summary's timing, its wall time and its peak RSS."""
    cmd = [sys.executable, "-m", "neurocli", "train", str(config), "--json", "--set", f"engine.kind={kind}"]
    for s in sets:
        cmd += ["--set", s]
    timed = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    p = subprocess.run(timed + cmd, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        NOTES.append(f"train on engine {kind} failed: {p.stderr.strip().splitlines()[-1:]}")
        return None
    import json

    summary = json.loads(p.stdout.strip().splitlines()[-1])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {"wall": wall, "peak_mb": int(m.group(1)) / 1e3 if m else None, "epochs": summary["epochs"],
            **summary["timing"], "weights": summary["weights_standardized"]}


def _with_more_epochs(config: Path, kind: str, env: dict, epochs: int, more: int, *sets: str) -> dict | None:
    """Two `train --json` processes of ``epochs`` and ``epochs + more`` epochs: the first's
    timings, wall and peak RSS, and ``epoch_s``, the time of an epoch once the engine runs
    (the difference of their train_s over ``more``): a cluster's first epoch also reads
    its parts and loads its kernels on every worker."""
    r = _train_process(config, kind, env, *sets)
    longer = _train_process(config, kind, env, *sets, f"training.epochs={epochs + more}")
    if r is None or longer is None:
        return r
    return {**r, "epoch_s": max(0.0, longer["train_s"] - r["train_s"]) / more}


def beyond_memory(n: int, d: int, epochs: int, tmp: Path):
    """CSV -> Parquet and each format's read throughput; then the same full-batch training as
    whole processes on the memory, stream and dask engines: the epoch once running (two
    runs of different lengths) and the whole run's mean (the summary's train_s / epochs),
    peak RSS against the data's float64 size, and the same bits."""
    if optional("pyarrow") is None:
        NOTES.append("formats and engines skipped: pyarrow not installed (pip install \"neurocli[dask]\")")
        return
    csv, parquet, convert_s = write_data_set(tmp, n, d)
    csv_mb, pq_mb, data_mb = csv.stat().st_size / 1e6, parquet.stat().st_size / 1e6, n * (d + 1) * 8 / 1e6
    opts = dict(target="y", features=None, missing="error", delimiter=",", layout="F")
    med = interleaved({"csv": lambda: read_table(csv, **opts), "parquet": lambda: read_table(parquet, **opts)}, 3)
    ROWS.append((f"CSV -> Parquet with pyarrow, {csv_mb:.0f} MB CSV -> {pq_mb:.0f} MB", fmt_s(convert_s),
                 f"{csv_mb / convert_s:.0f} MB/s of CSV", ""))
    for kind, mb in (("csv", csv_mb), ("parquet", pq_mb)):
        ROWS.append((f"read + validate {kind} ({n:,} x {d + 1}, {mb:.0f} MB)", fmt_s(med[kind]),
                     f"{mb / med[kind]:.0f} MB/s of file, {data_mb / med[kind]:.0f} MB/s of float64",
                     f"{med[kind] / med['parquet']:.2f}x parquet"))
    limit_mb = max(int(data_mb * 0.4), 400)  # below the data's size, above a worker's own needs
    config = tmp / "engines.yaml"
    config.write_text(f"data: {{path: {parquet}, target: y, validation_fraction: 0.2}}\n"
                      f"training: {{epochs: {epochs}, learning_rate: 0.0001}}\n"
                      f"engine: {{workers: 2, memory_limit: {limit_mb}MB}}\n"
                      f"output: {{dir: {tmp / 'runs'}}}\n")
    env = {"NEUROCLI_CACHE": "off", "NEUROCLI_CACHE_DIR": str(tmp / "cache")}
    small_limit = f"engine.memory_limit={limit_mb}MB"
    more = 2 * epochs
    runs = {"memory": _with_more_epochs(config, "memory", env, epochs, more),
            "stream": _with_more_epochs(config, "stream", env, epochs, more),
            "dask": _with_more_epochs(config, "dask", env, epochs, more, "engine.memory_limit=auto"),
            f"dask, memory_limit {limit_mb} MB a worker": _train_process(config, "dask", env, small_limit)}
    base = runs["memory"]
    if base is None:
        return
    for kind, r in runs.items():
        if r is None:
            continue
        mean = r["train_s"] / r["epochs"]
        rss = f"peak RSS {r['peak_mb']:.0f} MB = {r['peak_mb'] / data_mb:.2f}x data" if r["peak_mb"] else ""
        same = "same bits" if r["weights"] == base["weights"] else "DIFFERENT bits"
        ratios = f"mean of its {epochs} {mean / (base['train_s'] / base['epochs']):.2f}x memory's"
        if "epoch_s" in r and base.get("epoch_s"):
            ratios = f"{r['epoch_s'] / base['epoch_s']:.2f}x memory's epoch once running; " + ratios
        target = {"stream": " [target <= 1.5x]", "dask": " [target <= 2x]"}.get(kind, "")
        ROWS.append((f"train on engine {kind}, {epochs} full-batch epochs of {data_mb:.0f} MB (whole process)"
                     f"{target}", (fmt_s(r["epoch_s"]) + " an epoch running, " if "epoch_s" in r else "")
                     + fmt_s(mean) + " mean", rss + (" (client only)" if kind.startswith("dask") else ""),
                     f"{ratios}; {same}; load {r['load_s']:.1f} s, wall {r['wall']:.1f} s"))
    NOTES.append(f"dask: a LocalCluster of 2 workers that read their parts from the prepared file; with "
                 f"memory_limit {limit_mb} MB a worker, below the data's {data_mb:.0f} MB, the run is the last "
                 f"dask row (or a failure note): dask spills")


# --- 5. the live display ---

def live_display(epochs, rounds, tmp: Path):
    """Wall time of the quickstart run with the live view (on a pseudo-terminal) and with --quiet."""
    import pty

    cmd = [sys.executable, "-m", "neurocli", "train", str(ROOT / "configs" / "quickstart.yaml"),
           "--set", f"training.epochs={epochs}", "--set", "training.early_stopping=null",
           "--set", f"output.dir={tmp / 'live-runs'}"]

    def run(live: bool):
        master, slave = pty.openpty()
        p = subprocess.Popen(cmd + ([] if live else ["--quiet"]), stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        while True:  # drain the terminal so the child never blocks on it
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
        p.wait()
        os.close(master)
        if p.returncode != 0:
            raise RuntimeError(f"quickstart run failed with exit code {p.returncode}")

    med = interleaved({"quiet": lambda: run(False), "live": lambda: run(True)}, rounds)
    row(f"quickstart, {epochs:,} epochs, live view (whole process)", med["live"], med["quiet"], "--quiet")


# --- 6. start-up ---

def startup(rounds, tmp: Path):
    """Whole processes as a learner runs them, dozens of times: the quickstart (--quiet and
    --json) against `python -c "import numpy, pandas"`, which reading a CSV costs anyway, and
    --help, --version, train --help and a config error against `python -c "pass"`, the bare
    interpreter. Bytecode is cached (in a folder of this run's, filled by a first, untimed
    round), as it is after `pip install .` or any first run; the table cache is filled too."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), NEUROCLI_CACHE_DIR=str(tmp / "startup-cache"))
    bad_key, no_data = tmp / "bad-key.yaml", tmp / "no-data.yaml"
    bad_key.write_text(f"data: {{path: {ROOT / 'data' / 'penguins.csv'}, target: body_mass_g, colour: blue}}\n")
    no_data.write_text(f"data: {{path: {tmp / 'absent.csv'}, target: body_mass_g}}\n")
    neurocli_ = [sys.executable, "-m", "neurocli"]
    quickstart = [*neurocli_, "train", str(ROOT / "configs" / "quickstart.yaml"),
                  "--set", f"output.dir={tmp / 'startup-runs' / 'quickstart'}"]
    cases = {"numpy, pandas": ([sys.executable, "-c", "import numpy, pandas"], 0),
             "quiet": ([*quickstart, "--quiet"], 0), "json": ([*quickstart, "--json"], 0),
             "pass": ([sys.executable, "-c", "pass"], 0), "help": ([*neurocli_, "--help"], 0),
             "version": ([*neurocli_, "--version"], 0), "train help": ([*neurocli_, "train", "--help"], 0),
             "bad key": ([*neurocli_, "train", str(bad_key)], 2), "no data": ([*neurocli_, "train", str(no_data)], 2)}

    cpu = {name: [] for name in cases}  # user + system seconds: what a busy machine moves less

    def run(name):
        cmd, expected = cases[name]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if p.returncode != expected:
            raise RuntimeError(f"{name}: exit code {p.returncode}, not {expected}: {p.stderr.strip()[-300:]}")

    for name in cases:  # the bytecode and the table cache filled
        run(name)
    med = interleaved({name: (lambda name=name: run(name)) for name in cases}, rounds)
    cpu = {name: statistics.median(v[1:]) for name, v in cpu.items()}

    def timed(name, what, floor, floor_name):
        ROWS.append((f"start-up: {what} (whole process)", fmt_s(med[name]), f"{med[name] / med[floor]:.2f}x {floor_name}",
                     f"CPU time {cpu[name] / cpu[floor]:.2f}x the floor's"))

    for name, what in [("quiet", "quickstart, train -q"), ("json", "quickstart, train --json")]:
        timed(name, what, "numpy, pandas", "python -c 'import numpy, pandas'")
    for name, what in [("help", "neurocli --help"), ("version", "neurocli --version"),
                       ("train help", "neurocli train --help"), ("bad key", "train, config error: an unknown key"),
                       ("no data", "train, config error: data.path names no file")]:
        timed(name, what, "pass", "python -c pass")
    NOTES.append(f"start-up floors: python -c 'import numpy, pandas' {fmt_s(med['numpy, pandas'])}, python -c pass "
                 f"{fmt_s(med['pass'])}")


# --- 7. scaling ---

def scaling(sizes, d, epochs, rounds):
    per_epoch = {}
    for n in sizes:
        rng = np.random.default_rng(3)
        X = np.asfortranarray(rng.standard_normal((n, d)))  # column-major, as full-batch training holds it
        y = np.maximum(X @ rng.standard_normal(d) + 1.0, 0)
        cfg = TrainingConfig(epochs=epochs, learning_rate=0.01, batch_size=None, early_stopping=None)

        def train():
            t = Trainer(X, y, np.empty((0, d)), np.empty(0), cfg, 0, TrainState(w=np.full(d, 0.1), b=np.float64(1.0)))
            for _ in t.run():
                pass

        per_epoch[n] = interleaved({"t": train}, rounds)["t"] / epochs
    ns = np.array(sorted(per_epoch), dtype=float)
    ts = np.array([per_epoch[int(v)] for v in ns])
    slope = np.polyfit(np.log(ns), np.log(ts), 1)[0]
    largest = ns[-1]
    for n_, t_ in zip(ns, ts):
        per_row = t_ / n_
        ROWS.append((f"full-batch epoch N={int(n_):,} d={d}", fmt_s(t_),
                     f"{per_row / (ts[-1] / largest):.2f}x the time per row at N={int(largest):,}", ""))
    NOTES.append(f"scaling: fitted log-log slope of time per epoch against N = {slope:.2f} (1.00 is linear)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round: check that the suite runs")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case (default 11, 1 with --quick)")
    ap.add_argument("--only", default="gradient,minibatch,loading,memory,engines,live,startup,scaling",
                    help="comma-separated subset of: gradient, minibatch, loading, memory, engines, live, startup, "
                         "scaling")
    ap.add_argument("--write", nargs="?", const=str(ROOT / "benchmarks" / "RESULTS.md"), default=None, metavar="PATH",
                    help="also write the table as Markdown (default path: benchmarks/RESULTS.md)")
    args = ap.parse_args(argv)
    q = args.quick
    rounds = args.rounds or (1 if q else 11)
    only = set(args.only.split(","))
    torch = optional("torch") if only & {"gradient", "minibatch"} else None
    jax = optional("jax") if "gradient" in only else None
    polars = optional("polars") if "loading" in only else None
    tmp = Path(tempfile.mkdtemp(prefix="neurocli-bench-"))
    saved_env = {k: os.environ.get(k) for k in ("NEUROCLI_CACHE_DIR",)}
    try:
        if "gradient" in only:
            gradient([(2_000, 32), (500, 256)] if q else [(1_000_000, 32), (200_000, 256)], rounds, torch, jax)
        if "minibatch" in only:
            minibatch(2_000 if q else 100_000, 20, 2 if q else 5, rounds, torch)
            if not q:
                minibatch(1_000_000, 32, 3, max(3, rounds // 2), torch)
        csv_n, csv_d = (2_000, 32) if q else (1_000_000, 32)
        path = None
        if "loading" in only or "memory" in only:
            path = loading(csv_n, csv_d, min(rounds, 5), tmp, polars)
        if "memory" in only:
            peak_memory(path, tmp, csv_n, csv_d)
        if "engines" in only:
            beyond_memory(20_000 if q else 4_000_000, 32, 2 if q else 4, tmp)
        if "live" in only:
            live_display(200 if q else 20_000, 1 if q else 3, tmp)
        if "startup" in only:
            startup(rounds, tmp)
        if "scaling" in only:
            scaling([1_000, 3_000, 10_000] if q else [10_000, 30_000, 100_000, 300_000, 1_000_000], 32,
                    2 if q else 10, rounds if q else 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    lines = table(rounds, q)
    print("\n".join(lines))
    if args.write:
        write_results(Path(args.write), lines, argv)


def table(rounds, quick) -> list[str]:
    """The results as Markdown lines: the heading facts, one row per case, then the notes."""
    out = [f"neurocli benchmarks{' (--quick: tiny sizes, not a measurement)' if quick else ''}; "
           f"medians of {rounds} interleaved round{'s' if rounds > 1 else ''}",
           "machine: " + "; ".join(machine()), ""]
    head = ("case", "median", "vs floor", "vs peers (same run)")
    widths = [max(len(r[i]) for r in ROWS + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out += [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in ROWS] + [""]
    return out + [f"- {n}" for n in NOTES]


def write_results(path: Path, lines: list[str], argv) -> None:
    """The table as a Markdown page, replaced atomically: a run's output, never edited by hand."""
    command = " ".join(["python benchmarks/run.py"] + list(sys.argv[1:] if argv is None else argv))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join(["# Benchmark results", "",
                      f"Written by `{command}` on {when}; rerun it to replace this page, do not edit it.",
                      "Ratios are to a floor or a peer measured in the same run; timings on a shared machine",
                      "move between runs, ratios much less.", ""] + lines) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
