"""The pictures of a training run, drawn with matplotlib (Agg), with no printing.

Three pictures of a run directory: the loss per epoch (:func:`loss_figure`), predicted
against actual (:func:`predicted_figure`) and the training loss over the two most
influential weights with the descent drawn on it (:func:`surface_figure`). Each function
returns a matplotlib Figure, so a notebook can show it; :func:`run_figures` makes all three
from a run directory and :func:`write_plots` saves them into ``RUN_DIR/plots/``.

history.csv holds no parameters per epoch, so the descent's path is recomputed: the run's
config is trained again in a temporary folder (the same seed and config give the same bits)
and the parameters are read after every epoch (:func:`replay`). That the replay ends at
model.json's parameters, bit for bit, is the check that it is the run.

This is the one module that imports matplotlib: the other commands never load it.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from neurocli import io as nio
from neurocli import neuron, savedfiles
from neurocli.config import load_config
from neurocli.errors import ModelFileError, OutputError
from neurocli.gradcheck import sample_rows
from neurocli.pipeline import Inputs, TrainRun, load_inputs
from neurocli.problems import model_parameters
from neurocli.train import StopReason, evaluate

FORMATS = ("png", "svg")
PICTURES = ("loss", "predicted", "surface")
SURFACE_ROWS = 20_000  # the loss surface is evaluated on at most this many training rows (a seeded sample)
SCATTER_POINTS = 20_000  # predicted against actual draws at most this many points (a seeded sample)
GRID = 161  # grid points along each axis of the surface (odd: the trained point is the middle one)
GRID_CHUNK_VALUES = 262_144  # rows x grid points evaluated at once (2 MB of float64: in cache)
WINDOW_MARGIN = 1.15  # the surface's window: the path's farthest point from the trained one, times this
HISTORY_COLUMNS = ("epoch", "loss", "val_loss")
CREASE_LINES = 40  # each row's crease is drawn when at most this many rows cross z = 0 in the window


@dataclass
class RunFiles:
    """What a run directory holds that the pictures need: its history and its model."""

    run_dir: Path
    history: list[dict]  # one record per epoch, as history.csv holds them (the model's epochs only)
    model: dict  # model.json, checked
    history_path: Path

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.json"


def read_run(run_dir: Path) -> RunFiles:
    """The history and model of ``run_dir``; a folder that is not a run directory, a damaged
    history or a run of 0 epochs is a ModelFileError naming the file and the place."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelFileError("run directory not found", path=run_dir)
    if not run_dir.is_dir():
        raise ModelFileError("is a file, not a run directory (give the folder that holds model.json and history.csv)",
                             path=run_dir)
    absent = [name for name in ("history.csv", "model.json") if not (run_dir / name).exists()]
    if absent:
        raise ModelFileError(f"not a run directory: it has no {' and no '.join(absent)} (a training run leaves "
                             f"model.json and history.csv in its run directory)", path=run_dir)
    model = savedfiles.load_model(run_dir / "model.json")
    path = run_dir / "history.csv"
    _, history = nio.read_history_text(path)
    _check_history(history, path)
    epochs = model.get("epochs")
    if epochs is not None:  # a kill between the history's save and the model's leaves rows ahead of it
        if len(history) < epochs:
            raise ModelFileError(f"history file is damaged: it holds {len(history)} epochs but model.json has "
                                 f"{epochs}", path=path)
        history = history[:epochs]
    if not history:
        raise ModelFileError("the run has 0 epochs (it stopped before its first epoch ended): nothing to plot",
                             path=path)
    return RunFiles(run_dir, history, model, path)


def _check_history(history: list[dict], path: Path) -> None:
    """Every record has the columns the pictures read, of their types, epochs 1, 2, 3, ..."""
    for i, row in enumerate(history):
        where = f"line {i + 2}"
        missing = [c for c in HISTORY_COLUMNS if c not in row]
        if missing:
            raise ModelFileError(f"history file is damaged: the header has no column {missing[0]!r}", path=path,
                                 where="line 1")
        if row["epoch"] != i + 1:
            raise ModelFileError(f"history file is damaged: epoch is {row['epoch']!r}, expected {i + 1}", path=path,
                                 where=where)
        if not isinstance(row["loss"], (int, float)):
            raise ModelFileError("history file is damaged: loss is empty", path=path, where=where)


# --- the loss per epoch ---------------------------------------------------------------------

def best_epoch(history: list[dict], model: dict) -> int | None:
    """The epoch whose parameters early stopping restored, or None when it restored none:
    model.json's ``best_epoch``; in a model without it, the early-stopping rule run again
    over the history (the last epoch whose monitored loss, validation if any, beat the best
    before it by more than min_delta)."""
    if model.get("stopped") != StopReason.EARLY_STOPPING:
        return None
    if model.get("best_epoch") is not None:
        return int(model["best_epoch"])
    es = ((model.get("config") or {}).get("training") or {}).get("early_stopping") or {}
    min_delta = float(es.get("min_delta", 0.0))
    key = "val_loss" if all(h["val_loss"] is not None for h in history) else "loss"
    best, at = math.inf, None
    for h in history:
        if h[key] < best - min_delta:
            best, at = h[key], h["epoch"]
    return at


def loss_figure(history: list[dict], best: int | None = None, title: str = "") -> Figure:
    """Training and validation loss per epoch on a log scale; ``best``: the epoch early
    stopping restored, marked."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= 60 else None
    ax.plot(epochs, [h["loss"] for h in history], marker=marker, markersize=3, label="training loss")
    val = [(h["epoch"], h["val_loss"]) for h in history if h["val_loss"] is not None]
    if val:
        ax.plot(*zip(*val), marker=marker, markersize=3, label="validation loss")
    if best is not None:
        row = history[best - 1]
        ax.axvline(best, color="0.4", linestyle=":", linewidth=1)
        ax.plot([best], [row["val_loss"] if row["val_loss"] is not None else row["loss"]], "k*", markersize=11,
                label=f"best epoch {best} (restored by early stopping)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE, log scale)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend()
    ax.set_title(title or "loss per epoch")
    return fig


# --- predicted against actual ---------------------------------------------------------------

@dataclass
class Predicted:
    """The model on the rows it is judged on: the validation rows, or the training rows
    without a validation split."""

    actual: np.ndarray  # the drawn rows' targets (a seeded sample of at most SCATTER_POINTS)
    predicted: np.ndarray
    r2: float  # on all the rows
    split: str  # "validation" or "training"
    n_rows: int  # all the rows
    target: str


def predictions(inputs: Inputs, w: np.ndarray, b) -> Predicted:
    """The model (w, b, standardized units) on the validation rows, else the training rows."""
    p = inputs.prepared
    split, X, y = ("validation", p.X_val, p.y_val) if p.X_val.shape[0] else ("training", p.X_train, p.y_train)
    r2 = evaluate(X, y, w, b)["r2"]  # the run's own metric: model.json's val_r2 (or r2), bit for bit
    rows = sample_rows(X.shape[0], SCATTER_POINTS, inputs.loaded.config.seed)
    if rows is not None:
        X, y = X[rows], y[rows]
    pred = neuron.predict(np.asarray(X, dtype=np.float64), w.astype(np.float64), float(b))
    return Predicted(np.asarray(y, dtype=np.float64), pred, r2, split, p.X_val.shape[0] or p.X_train.shape[0],
                     p.table.target)


def predicted_figure(pred: Predicted, title: str = "") -> Figure:
    """Each drawn row's prediction against its target, the line y = x, R^2 in the title."""
    fig = _figure(6.0, 6.0)
    ax = fig.add_subplot()
    ax.scatter(pred.actual, pred.predicted, s=12, alpha=0.6, edgecolors="none", label=f"{pred.split} rows")
    both = np.concatenate([pred.actual, pred.predicted])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1, label="y = x (a perfect prediction)")
    ax.set_xlabel(f"actual {pred.target}")
    ax.set_ylabel(f"predicted {pred.target}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left")
    drawn = len(pred.actual)
    rows = (f"{pred.n_rows:,} {pred.split} rows" if drawn == pred.n_rows else
            f"{pred.split} rows: a seeded sample of {drawn:,} of {pred.n_rows:,} drawn")
    fig.suptitle(title or "predicted against actual", fontsize=12)
    ax.set_title(f"{rows}; R\u00b2 = {pred.r2:.4f}", fontsize=10)
    return fig


# --- the descent, replayed ------------------------------------------------------------------

@dataclass
class Descent:
    """The parameters of a replayed run: row 0 the initial ones, row t those after epoch t.

    ``final_w``, ``final_b``: where the run ended, which early stopping sets back to the
    parameters its best epoch started from (row best - 1).
    """

    w: np.ndarray  # (epochs + 1, n_features), the training dtype
    b: np.ndarray  # (epochs + 1,)
    final_w: np.ndarray
    final_b: np.floating
    stopped: str


def replay(inputs: Inputs) -> Descent:
    """Train ``inputs`` again, into a temporary run directory, and keep the parameters after
    every epoch. A Ctrl-C during the replay is a KeyboardInterrupt, as anywhere else."""
    with tempfile.TemporaryDirectory(prefix="neurocli-replay-") as tmp:
        run = TrainRun(inputs, Path(tmp))
        ws, bs = [run.state.w.copy()], [run.state.b]

        def keep(_record) -> None:  # after each epoch's record the state holds the epoch's end
            ws.append(run.state.w.copy())
            bs.append(run.state.b)

        run.run(keep)
        if run.trainer.stopped == StopReason.INTERRUPTED:
            raise KeyboardInterrupt
        return Descent(np.array(ws), np.array(bs), run.state.w.copy(), run.state.b, str(run.trainer.stopped))


# --- the loss surface -----------------------------------------------------------------------

@dataclass
class Surface:
    """The training loss over two parameters, the others at their trained values.

    ``axes``: the two parameters' indices in (w_1, ..., w_n, b) (n is the bias, an axis only
    for a neuron of one feature); ``u``, ``v``: the grid along each; ``loss[l, k]`` at
    (u[k], v[l]), and there ``active`` (rows with z > 0), ``z_min`` and ``z_max`` (the least
    and the largest z of the rows). ``creases``: (c, p, q) of each row whose line
    z = c + p u + q v = 0 crosses the window, where that row's term of C bends. The trained
    point is (u[GRID // 2], v[GRID // 2]).
    """

    axes: tuple[int, int]
    names: tuple[str, str]
    u: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    active: np.ndarray
    z_min: np.ndarray
    z_max: np.ndarray
    creases: np.ndarray  # (rows crossing, 3)
    rows: int  # the rows the loss is the mean over
    rows_total: int  # the training rows
    seed: int
    standardized: bool  # the features are z-scores (the axes' units)

    @property
    def sampled(self) -> bool:
        return self.rows < self.rows_total

    @property
    def center(self) -> tuple[float, float]:
        return float(self.u[GRID // 2]), float(self.v[GRID // 2])


def influential_axes(X: np.ndarray, w: np.ndarray, standardized: bool) -> tuple[int, int]:
    """The two weights whose changes move z most: largest |w_k| times the feature's standard
    deviation (for standardized features, |w_k|); the first is the larger. One feature: the
    weight and the bias."""
    n = w.shape[0]
    if n == 1:
        return 0, 1
    scale = np.ones(n) if standardized else np.std(np.asarray(X, dtype=np.float64), axis=0)
    order = np.argsort(-np.abs(w.astype(np.float64)) * scale, kind="stable")
    return int(order[0]), int(order[1])


def _window(center: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Half-widths of the window around ``center`` that holds every point of ``path``
    (the initial point among them)."""
    half = WINDOW_MARGIN * np.max(np.abs(path - center), axis=0)
    floor = 0.5 * np.maximum(np.abs(center), 1.0)  # a path that never left the point: a window of its size
    return np.where(half > 1e-9 * floor, half, floor)


def _grid(center: float, half: float) -> np.ndarray:
    """GRID values from center - half to center + half, the middle one exactly ``center``."""
    g = center + half * np.linspace(-1.0, 1.0, GRID)
    g[GRID // 2] = center
    return g


def loss_surface(inputs: Inputs, w: np.ndarray, b, descent: Descent | None = None) -> Surface:
    """The training loss C over the two most influential parameters around the trained (w, b),
    the others held there, on a window that holds the whole descent (its initial point among
    it); on a seeded sample of at most :data:`SURFACE_ROWS` training rows. Evaluated with the
    neuron's forward pass, vectorized over the grid's points."""
    p, seed = inputs.prepared, inputs.loaded.config.seed
    rows = sample_rows(p.X_train.shape[0], SURFACE_ROWS, seed)
    X = np.asarray(p.X_train if rows is None else p.X_train[rows], dtype=np.float64)
    y = np.asarray(p.y_train if rows is None else p.y_train[rows], dtype=np.float64)
    w, b = w.astype(np.float64), float(b)
    axes = influential_axes(X, w, p.standardization is not None)
    theta = np.append(w, b)
    center = theta[list(axes)]
    path = center[None, :] if descent is None else _on_axes(descent, axes)
    half = _window(center, path)
    u, v = _grid(center[0], half[0]), _grid(center[1], half[1])
    A, c = _split_z(X, theta, axes)
    loss, active, z_min, z_max = _evaluate_grid(A, c, y, u, v)
    names = tuple(parameter_name(list(p.feature_names), k) for k in axes)
    return Surface(axes, names, u, v, loss, active, z_min, z_max, _creases(A, c, u, v), X.shape[0],
                   p.X_train.shape[0], seed, p.standardization is not None)


def parameter_name(features: list[str], k: int) -> str:
    return "b" if k == len(features) else f"w[{features[k]}]"


def _on_axes(descent: Descent, axes: tuple[int, int]) -> np.ndarray:
    """The descent's points on the two axes, float64, shape (epochs + 1, 2)."""
    theta = np.column_stack([descent.w.astype(np.float64), descent.b.astype(np.float64)])
    return theta[:, list(axes)]


def _split_z(X: np.ndarray, theta: np.ndarray, axes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """z = A (u, v) + c: A, the rows' values on the two axes (a column of ones for the bias),
    and c, the rest of z at the trained parameters (:func:`neurocli.neuron.pre_activation`)."""
    n = X.shape[1]
    A = np.column_stack([X[:, k] if k < n else np.ones(X.shape[0]) for k in axes])
    others = [k for k in range(n) if k not in axes]
    c = neuron.pre_activation(X[:, others], theta[others], 0.0 if n in axes else theta[n])
    return A, c


def _evaluate_grid(A, c, y, u, v) -> tuple[np.ndarray, ...]:
    """C, the active rows and the least and largest z at every grid point (u[k], v[l]), as
    arrays indexed [l, k]: z = c + u A[:, 0] + v A[:, 1] for a block of grid points at once,
    one grid point a row (so each reduction runs along memory), then the neuron's ReLU."""
    n = A.shape[0]
    loss, active = np.empty((len(v), len(u))), np.empty((len(v), len(u)), dtype=np.int64)
    z_min, z_max = np.empty_like(loss), np.empty_like(loss)
    p, q = A[:, 0], A[:, 1]
    step = max(1, GRID_CHUNK_VALUES // max(1, n))
    for l, v_l in enumerate(v):
        at_v = c + v_l * q  # (rows,): z along this line of the grid, but for the u term
        for at in range(0, len(u), step):
            k = slice(at, at + step)
            z = at_v[None, :] + u[k, None] * p[None, :]  # (grid points, rows)
            residual = neuron.relu(z) - y[None, :]
            loss[l, k] = np.einsum("ij,ij->i", residual, residual) / n
            active[l, k] = np.count_nonzero(neuron.active_mask(z), axis=1)
            z_min[l, k], z_max[l, k] = z.min(axis=1), z.max(axis=1)
    return loss, active, z_min, z_max


def _creases(A: np.ndarray, c: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(c, p, q) of the rows whose z = c + p u + q v changes sign inside the window: z is
    linear, so its least and largest values there are at the window's corners."""
    corners = np.array([[u[0], u[-1], u[0], u[-1]], [v[0], v[0], v[-1], v[-1]]])
    z = A @ corners + c[:, None]
    crossing = (z.min(axis=1) < 0) & (z.max(axis=1) > 0)
    return np.column_stack([c[crossing], A[crossing]])


def surface_figure(surface: Surface, descent: Descent | None = None, title: str = "") -> Figure:
    """The loss surface as filled contours on log-scaled levels, the creases (where a row
    crosses z = 0 and the set of active rows changes) and the descent drawn on it."""
    fig = _figure(7.5, 6.2)
    ax = fig.add_subplot()
    loss = np.where(np.isfinite(surface.loss), surface.loss, np.nan)
    top = float(np.nanmax(loss))
    bottom = max(float(np.nanmin(loss)), top * 1e-12, np.finfo(float).tiny)
    levels = np.geomspace(bottom, top, 30) if top > bottom else np.array([bottom * 0.999, bottom * 1.001])
    filled = ax.contourf(surface.u, surface.v, np.clip(loss, bottom, None), levels=levels, norm=LogNorm(),
                         cmap="viridis")
    ax.contour(surface.u, surface.v, loss, levels=levels[::3], colors="white", linewidths=0.3, alpha=0.5)
    fig.colorbar(filled, ax=ax, label="training loss C (MSE, log-scaled levels)", format="%.3g")
    handles = _draw_creases(ax, surface)
    handles += _draw_descent(ax, surface, descent)
    ax.set_xlim(surface.u[0], surface.u[-1])
    ax.set_ylim(surface.v[0], surface.v[-1])
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    ax.ticklabel_format(style="sci", scilimits=(-3, 4), useMathText=True)
    units = "standardized units" if surface.standardized else "the data's units"
    ax.set_xlabel(f"{surface.names[0]} ({units})")
    ax.set_ylabel(f"{surface.names[1]} ({units})")
    fig.suptitle(title or f"training loss over {surface.names[0]} and {surface.names[1]}", fontsize=12)
    ax.set_title(_surface_subtitle(surface), fontsize=8)
    return fig


def _surface_subtitle(s: Surface) -> str:
    rows = (f"C on a seeded sample of {s.rows:,} of {s.rows_total:,} training rows (seed {s.seed})"
            if s.sampled else f"C on all {s.rows:,} training rows")
    k = len(s.creases)
    crease = ("every row active across the window: no crease here (C is a quadratic)" if k == 0 and s.active.min() == s.rows
              else "no row crosses z = 0 in the window: no crease here" if k == 0
              else f"{k:,} row{'s' if k > 1 else ''} cross{'' if k > 1 else 'es'} z = 0 in the window: C creases along "
                   f"{'each one' if k > 1 else 'its'} line")
    return f"other parameters at their trained values; {rows}\n{crease}"


def _draw_creases(ax, s: Surface) -> list:
    """Each row's line z = 0 (at most :data:`CREASE_LINES` of them, thin), the edge of the
    region where every row is active (inside it C is an exact quadratic), and the edge of the
    region where none is (the neuron dead, C flat)."""
    handles = []
    if 0 < len(s.creases) <= CREASE_LINES:
        for c, p, q in s.creases:
            ax.axline(*_two_points(c, p, q, s), color="red", linewidth=0.5, alpha=0.6)
        handles.append(Line2D([], [], color="red", linewidth=0.5, alpha=0.6, label="a row's z = 0 (a crease)"))
    edges = [(s.z_min, "-", "edge of every row active (min z = 0)"),
             (s.z_max, ":", "edge of no row active (max z = 0): C flat beyond")]
    for z, style, label in edges:
        if z.min() < 0 < z.max():
            ax.contour(s.u, s.v, z, levels=[0.0], colors="red", linestyles=style, linewidths=1.5)
            handles.append(Line2D([], [], color="red", linestyle=style, linewidth=1.5, label=label))
    return handles


def _two_points(c: float, p: float, q: float, s: Surface) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two points of the line c + p u + q v = 0, solved for the coordinate with the larger factor."""
    if abs(q) >= abs(p):
        return (s.u[0], -(c + p * s.u[0]) / q), (s.u[-1], -(c + p * s.u[-1]) / q)
    return (-(c + q * s.v[0]) / p, s.v[0]), (-(c + q * s.v[-1]) / p, s.v[-1])


def _draw_descent(ax, s: Surface, descent: Descent | None) -> list:
    handles = [ax.plot([s.center[0]], [s.center[1]], "*", color="white", markeredgecolor="black", markersize=15,
                       label="trained point (model.json)", zorder=5)[0]]
    if descent is None:
        return handles
    path = _on_axes(descent, s.axes)
    handles.insert(0, ax.plot(path[:, 0], path[:, 1], "-", color="orange", marker=".", markersize=4, linewidth=1.2,
                              label=f"descent, {len(path) - 1} epochs (replayed)", zorder=4)[0])
    handles.insert(1, ax.plot([path[0, 0]], [path[0, 1]], "o", color="orange", markeredgecolor="black", markersize=8,
                              label="initial point", zorder=5)[0])
    return handles


# --- a run directory's pictures -------------------------------------------------------------

@dataclass
class RunFigures:
    figures: dict[str, Figure]  # loss, predicted, surface
    warnings: list[str]
    descent: Descent
    surface: Surface


def run_figures(run_dir: Path, config: Path | None = None) -> RunFigures:
    """The three pictures of a run directory; its data and the replay from ``config`` (by
    default the run's own config.yaml). ``warnings``: a replay that does not end at the
    model's parameters, a data file that changed since the run."""
    run = read_run(run_dir)
    config = _config_of(run, config)
    inputs = load_inputs(config, _replay_overrides(config, run))
    p = inputs.prepared
    try:
        w, b = model_parameters(run.model, run.model_path, p, p.X_train.dtype)
    except ModelFileError as exc:  # its words name gradcheck's option
        raise ModelFileError(exc.message.removeprefix("--model: "), path=exc.path) from None
    descent = replay(inputs)
    name = Path(run_dir).resolve().name
    surface = loss_surface(inputs, w, b, descent)
    figures = {
        "loss": loss_figure(run.history, best_epoch(run.history, run.model), f"loss per epoch: {name}"),
        "predicted": predicted_figure(predictions(inputs, w, b), f"predicted against actual: {name}"),
        "surface": surface_figure(surface, descent),
    }
    return RunFigures(figures, _warnings(run, inputs, descent, w, b), descent, surface)


def _config_of(run: RunFiles, config: Path | None) -> Path:
    if config is not None:
        return Path(config)
    own = run.run_dir / "config.yaml"
    if not own.exists():
        raise ModelFileError("the run directory has no config.yaml: pass the training config with --config",
                             path=run.run_dir)
    return own


def _replay_overrides(config: Path, run: RunFiles) -> list[str]:
    """The epochs the run trained (a run interrupted or extended stands where it stopped),
    and the in-memory engine for a dask config (the same bits, no cluster to start)."""
    overrides = [f"training.epochs={len(run.history)}"]
    if load_config(config).config.engine.kind == "dask":
        overrides.append("engine.kind=memory")
    return overrides


def _warnings(run: RunFiles, inputs: Inputs, descent: Descent, w, b) -> list[str]:
    out = []
    sha = (run.model.get("data") or {}).get("sha256")
    if sha and inputs.data_sha256 and sha != inputs.data_sha256:
        out.append(f"the data changed since the run (its SHA-256 is not {run.model_path}'s): the pictures are of "
                   f"the data as it is now")
    if descent.final_w.tobytes() != w.tobytes() or descent.final_b != b:
        out.append(f"the replayed descent does not end at {run.model_path}'s parameters (another config or data, "
                   f"or a run stopped inside an epoch?): surface.png's path is the replay's")
    return out


def write_plots(run_dir: Path, fmt: str = "png", config: Path | None = None) -> tuple[list[Path], list[str]]:
    """Draw the run's pictures into ``RUN_DIR/plots/`` (made if absent), each file replaced
    atomically; return the paths written and the warnings. Nothing is written unless every
    picture could be drawn."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    made = run_figures(run_dir, config)
    images = {name: _image(made.figures[name], fmt) for name in PICTURES}
    folder = Path(run_dir) / "plots"
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the plots folder: {exc.strerror or exc}", path=folder) from None
    paths = []
    for name in PICTURES:
        path = folder / f"{name}.{fmt}"
        nio.atomic_write_bytes(path, images[name])
        paths.append(path)
    return paths, made.warnings


def _figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg, apart from pyplot (no global state, no window)."""
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image(fig: Figure, fmt: str) -> bytes:
    """The figure as a file's bytes; the same figure gives the same bytes (no date, fixed SVG ids)."""
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "neurocli"}):
        fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()
