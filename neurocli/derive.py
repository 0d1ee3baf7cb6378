"""The derivation of the neuron's gradient, as data (Parr & Howard, sections 4.5.3, 5 and 6).

:func:`derive_neuron` builds a :class:`Derivation`: the intermediate variables, one
:class:`Step` per Jacobian (Unicode and LaTeX formula, shape, and, when evaluated, its
value as a 2-d matrix in the paper's numerator layout), the loss section with a per-sample
table, and the three-way :class:`Check` (Jacobian chain, vectorized kernel, central
differences). :func:`derive_vector_chain_rule` does the same for the worked example of
section 4.5.3. Pure numpy: no printing, no files, no terminal.

Every number here is float64, whatever the training dtype, so the three ways agree to
rounding. Convention at the kink: ReLU'(0) = 0, so ``da/dz = 1[z > 0]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from neurocli import gradcheck, numeric
from neurocli.engines import memory

# Central differences: step relative to the parameter, and the agreement asked of the three ways.
FD_RELATIVE_STEP = 1e-5
CHECK_TOLERANCE = 1e-5
# Rows of the per-sample table shown at each end when the data has more than TABLE_ROWS_MAX rows.
TABLE_ROWS_EACH_END = 5
TABLE_ROWS_MAX = 2 * TABLE_ROWS_EACH_END + 2
# Rows per block when the chain is multiplied out over a large data set.
CHAIN_BLOCK_ROWS = 65536

# The built-in example (no config): 3 features, 4 samples, one of them inactive.
EXAMPLE_FEATURES = ["x1", "x2", "x3"]
EXAMPLE_X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [-2.0, 1.0, 0.5], [3.0, 0.0, -1.0]])
EXAMPLE_Y = np.array([3.0, 2.0, 1.0, 1.0])
EXAMPLE_W = np.array([0.5, -0.25, 1.0])
EXAMPLE_B = 0.1


@dataclass(frozen=True)
class Formula:
    """One line of mathematics: Unicode for the terminal, LaTeX for markdown and documents."""

    text: str
    latex: str
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One Jacobian of the derivation, in numerator layout (functions down, variables across).

    name : the stable id used in JSON (``"du/dw"``)
    symbol, symbol_latex : the left-hand side (``∂u/∂w``)
    rhs, rhs_latex : the right-hand side, a chain product written out where there is one
    shape : (rows, columns) of the Jacobian, ``shape_text`` the same in letters (``n x n``)
    value : ndarray of that shape, or None when not evaluated
    chain : the names of the factors, left to right, when the step is a chain product
    factors : their values (same order) when evaluated; ``value`` is their matrix product
    cases : the ReLU case split, as (value, condition) pairs, when the step has one
    """

    name: str
    symbol: str
    symbol_latex: str
    rhs: str
    rhs_latex: str
    shape: tuple[int, int]
    shape_text: str
    value: np.ndarray | None = None
    chain: tuple[str, ...] = ()
    factors: tuple[np.ndarray, ...] = ()
    cases: tuple[tuple[Formula, Formula], ...] = ()
    note: str = ""

    @property
    def formula(self) -> str:
        return f"{self.symbol} = {self.rhs}"

    @property
    def latex(self) -> str:
        return f"{self.symbol_latex} = {self.rhs_latex}"


def line_number(place: str | None) -> int | None:
    """The line of a place in a data set of one CSV file ("line 7" -> 7); None for any other
    place ("row 6" of a Parquet file, "part-0003.csv, line 7" of a data set of several files)."""
    found = re.fullmatch(r"line (\d+)", place or "")
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class SampleRow:
    """One row of the per-sample loss table.

    index : 0-based row of the data after preprocessing
    place : where it is in the data set ("line 7", "row 6", "part-0003.csv, line 7"; None for the example)
    z : pre-activation; active : z > 0; error : e_i = w·x_i + b - y_i
    grad_w : ndarray of shape (n_features,), this sample's term of dC/dw; grad_b : its term of dC/db
    """

    index: int
    place: str | None
    z: float
    active: bool
    error: float
    grad_w: np.ndarray
    grad_b: float

    @property
    def line(self) -> int | None:
        """Its line, in a data set of one CSV file."""
        return line_number(self.place)


@dataclass(frozen=True)
class Check:
    """dC/dw and dC/db (as ``[dC/dw_1 .. dC/dw_n, dC/db]``) computed three independent ways.

    chain : the Jacobian chain, sample by sample; kernel : :func:`memory.loss_and_gradient`;
    numeric : central differences of the loss. ``kink[j]`` is True where a difference step on
    parameter j moves some z_i across 0: there the numeric value is not a derivative and is
    left out of ``max_rel_error`` (the chain and the kernel are still compared).
    """

    labels: list[str]
    chain: np.ndarray
    kernel: np.ndarray
    numeric: np.ndarray
    kink: np.ndarray
    step: np.ndarray
    max_rel_error: float
    tolerance: float
    shrunk: np.ndarray | None = None  # True where the step was shrunk below the kink, as gradcheck does

    @property
    def ok(self) -> bool:
        return bool(self.max_rel_error <= self.tolerance)

    @property
    def n_kink(self) -> int:
        return int(np.count_nonzero(self.kink))


@dataclass(frozen=True)
class LossSection:
    """Section 6: the loss, its gradient's formulas and, when evaluated, the numbers.

    rows : the per-sample table, capped (head rows, then tail rows); n_omitted rows between them
    grad_w : ndarray of shape (n_features,), the sum of the table's grad_w column over all rows
    """

    formulas: list[Formula]
    n_samples: int | None = None
    n_active: int | None = None
    loss: float | None = None
    rows_head: list[SampleRow] = field(default_factory=list)
    rows_tail: list[SampleRow] = field(default_factory=list)
    n_omitted: int = 0
    grad_w: np.ndarray | None = None
    grad_b: float | None = None


@dataclass(frozen=True)
class Derivation:
    """The whole derivation of one neuron's gradient, symbolic and (optionally) numeric."""

    n_features: int
    feature_names: list[str]
    target: str
    source: str
    units: str
    definitions: list[Formula]
    steps: list[Step]
    loss: LossSection
    evaluated: bool
    sample_index: int | None = None
    sample_place: str | None = None  # where the sample is in the data set, as Table.place names it
    x: np.ndarray | None = None
    y: float | None = None
    w: np.ndarray | None = None
    b: float | None = None
    z: float | None = None
    parameters_from: str = ""
    check: Check | None = None

    @property
    def sample_line(self) -> int | None:
        """The sample's line, in a data set of one CSV file."""
        return line_number(self.sample_place)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


# ----------------------------------------------------------------------------- the neuron


def definitions() -> list[Formula]:
    """The intermediate variables of section 5 (and the loss's of section 6)."""
    return [
        Formula("u = w ⊗ x", r"\mathbf{u} = \mathbf{w} \otimes \mathbf{x}", "element-wise product, n x 1"),
        Formula("y = sum(u)", r"y = \operatorname{sum}(\mathbf{u})", "scalar"),
        Formula("z = y + b", r"z = y + b", "scalar: z = w·x + b"),
        Formula("a = max(0, z)", r"a = \max(0, z)", "the activation"),
    ]


def _mat(v) -> np.ndarray:
    return np.atleast_2d(np.asarray(v, dtype=np.float64))


def neuron_steps(n: int, x: np.ndarray | None = None, w: np.ndarray | None = None, b: float | None = None) -> list[Step]:
    """The Jacobians of section 5 for one sample; evaluated (and multiplied out) when x, w, b are given.

    x, w : ndarray of shape (n,); b : float. Each ``value`` is a 2-d array in numerator layout;
    a chain step's value is the matrix product of its factors' values, not a closed form.
    """
    ev = x is not None
    if ev:
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        z = float(np.sum(w * x) + b)
        du_dw = np.diag(x)                      # n x n
        dy_du = np.ones((1, n))                 # 1 x n
        dy_dw = dy_du @ du_dw                   # 1 x n
        dz_dy = np.ones((1, 1))                 # z = y + b
        dz_dw = dz_dy @ dy_dw                   # 1 x n
        dz_db = np.ones((1, 1))                 # 1 x 1
        da_dz = _mat(1.0 if z > 0 else 0.0)     # ReLU'(0) = 0: z == 0 is inactive
        da_dw = da_dz @ dz_dw                   # 1 x n
        da_db = da_dz @ dz_db                   # 1 x 1
        for m, shape in ((du_dw, (n, n)), (dy_dw, (1, n)), (dz_dw, (1, n)), (da_dw, (1, n)), (da_db, (1, 1))):
            assert m.shape == shape
    else:
        du_dw = dy_du = dy_dw = dz_dy = dz_dw = dz_db = da_dz = da_dw = da_db = None

    def _f(*ms):
        return () if ms[0] is None else tuple(ms)
    relu_cases = (
        (Formula("0", "0"), Formula("z ≤ 0", r"z \le 0")),
        (Formula("1", "1"), Formula("z > 0", "z > 0")),
    )
    dadw_cases = (
        (Formula("0⃗ᵀ", r"\vec{0}^T"), Formula("z ≤ 0", r"z \le 0")),
        (Formula("xᵀ", r"\mathbf{x}^T"), Formula("z > 0", "z > 0")),
    )
    dadb_cases = relu_cases
    P = r"\partial"
    return [
        Step("du/dw", "∂u/∂w", rf"\frac{{{P} \mathbf{{u}}}}{{{P} \mathbf{{w}}}}",
             "diag(x)", r"\operatorname{diag}(\mathbf{x})", (n, n), "n x n", du_dw,
             note="u_i = w_i x_i depends on w_i only"),
        Step("dy/du", "∂y/∂u", rf"\frac{{{P} y}}{{{P} \mathbf{{u}}}}",
             "1⃗ᵀ", r"\vec{1}^T", (1, n), "1 x n", dy_du, note="a row of ones"),
        Step("dy/dw", "∂y/∂w", rf"\frac{{{P} y}}{{{P} \mathbf{{w}}}}",
             "∂y/∂u · ∂u/∂w = 1⃗ᵀ diag(x) = xᵀ",
             rf"\frac{{{P} y}}{{{P} \mathbf{{u}}}} \frac{{{P} \mathbf{{u}}}}{{{P} \mathbf{{w}}}} = \vec{{1}}^T \operatorname{{diag}}(\mathbf{{x}}) = \mathbf{{x}}^T",
             (1, n), "1 x n", dy_dw, chain=("dy/du", "du/dw"), factors=_f(dy_du, du_dw)),
        Step("dz/dw", "∂z/∂w", rf"\frac{{{P} z}}{{{P} \mathbf{{w}}}}",
             "∂z/∂y · ∂y/∂w = 1 · xᵀ = xᵀ",
             rf"\frac{{{P} z}}{{{P} y}} \frac{{{P} y}}{{{P} \mathbf{{w}}}} = 1 \cdot \mathbf{{x}}^T = \mathbf{{x}}^T",
             (1, n), "1 x n", dz_dw, chain=("dz/dy", "dy/dw"), factors=_f(dz_dy, dy_dw),
             note="z = y + b, so ∂z/∂y = 1"),
        Step("dz/db", "∂z/∂b", rf"\frac{{{P} z}}{{{P} b}}", "1", "1", (1, 1), "1 x 1", dz_db),
        Step("da/dz", "∂a/∂z", rf"\frac{{{P} a}}{{{P} z}}", "1[z > 0]", r"\mathbf{1}[z > 0]", (1, 1), "1 x 1",
             da_dz, cases=relu_cases,
             note="convention at the kink: ReLU'(0) = 0, a sample with z = 0 is inactive"),
        Step("da/dw", "∂a/∂w", rf"\frac{{{P} a}}{{{P} \mathbf{{w}}}}",
             "∂a/∂z · ∂z/∂w = 1[z > 0] xᵀ",
             rf"\frac{{{P} a}}{{{P} z}} \frac{{{P} z}}{{{P} \mathbf{{w}}}} = \mathbf{{1}}[z > 0]\, \mathbf{{x}}^T",
             (1, n), "1 x n", da_dw, chain=("da/dz", "dz/dw"), factors=_f(da_dz, dz_dw), cases=dadw_cases),
        Step("da/db", "∂a/∂b", rf"\frac{{{P} a}}{{{P} b}}",
             "∂a/∂z · ∂z/∂b = 1[z > 0]",
             rf"\frac{{{P} a}}{{{P} z}} \frac{{{P} z}}{{{P} b}} = \mathbf{{1}}[z > 0]",
             (1, 1), "1 x 1", da_db, chain=("da/dz", "dz/db"), factors=_f(da_dz, dz_db), cases=dadb_cases),
    ]


# ----------------------------------------------------------------------------- the loss


def loss_formulas() -> list[Formula]:
    """Section 6, in the paper's order, ending with the vectorized form the kernels use."""
    return [
        Formula("C(w, b, X, y) = (1/N) Σᵢ (yᵢ − aᵢ)²,  aᵢ = max(0, w·xᵢ + b)",
                r"C(\mathbf{w}, b, X, \mathbf{y}) = \frac{1}{N} \sum_{i=1}^{N} \left(y_i - \max(0, \mathbf{w} \cdot \mathbf{x}_i + b)\right)^2",
                "mean over the N rows, no 1/2 factor"),
        Formula("u = max(0, w·x + b),  v = y − u,  C = (1/N) Σ v²",
                r"u = \max(0, \mathbf{w} \cdot \mathbf{x} + b), \quad v = y - u, \quad C = \frac{1}{N} \sum v^2",
                "per sample; u is reused for the activation, as in the paper"),
        Formula("∂v/∂w = −∂u/∂w = 0⃗ᵀ if z ≤ 0,  −xᵀ if z > 0",
                r"\frac{\partial v}{\partial \mathbf{w}} = -\frac{\partial u}{\partial \mathbf{w}} = \begin{cases} \vec{0}^T & z \le 0 \\ -\mathbf{x}^T & z > 0 \end{cases}"),
        Formula("∂C/∂w = (1/N) Σᵢ 2vᵢ ∂vᵢ/∂w = (2/N) Σ_{zᵢ > 0} eᵢ xᵢᵀ,  eᵢ = w·xᵢ + b − yᵢ",
                r"\frac{\partial C}{\partial \mathbf{w}} = \frac{1}{N} \sum_{i} 2 v_i \frac{\partial v_i}{\partial \mathbf{w}} = \frac{2}{N} \sum_{i : z_i > 0} e_i \mathbf{x}_i^T, \quad e_i = \mathbf{w} \cdot \mathbf{x}_i + b - y_i",
                "1 x n, a row; inactive samples add nothing but N stays the full count"),
        Formula("∂C/∂b = (2/N) Σ_{zᵢ > 0} eᵢ",
                r"\frac{\partial C}{\partial b} = \frac{2}{N} \sum_{i : z_i > 0} e_i", "1 x 1"),
        Formula("∇_w C = (∂C/∂w)ᵀ = (2/N) Xᵀ ((a − y) ⊗ m),  ∂C/∂b = (2/N) 1⃗ᵀ ((a − y) ⊗ m),  m = 1[Xw + b1⃗ > 0]",
                r"\nabla_{\mathbf{w}} C = \left(\frac{\partial C}{\partial \mathbf{w}}\right)^T = \frac{2}{N} X^T \left((\mathbf{a} - \mathbf{y}) \otimes \mathbf{m}\right), \quad \frac{\partial C}{\partial b} = \frac{2}{N} \vec{1}^T \left((\mathbf{a} - \mathbf{y}) \otimes \mathbf{m}\right), \quad \mathbf{m} = \mathbf{1}[X\mathbf{w} + b\vec{1} > 0]",
                "vectorized, as the kernels compute it"),
    ]


def loss_steps(n: int, grad_w: np.ndarray | None = None, grad_b: float | None = None) -> list[Step]:
    P = r"\partial"
    return [
        Step("dC/dw", "∂C/∂w", rf"\frac{{{P} C}}{{{P} \mathbf{{w}}}}",
             "(2/N) Σ_{zᵢ > 0} eᵢ xᵢᵀ", r"\frac{2}{N} \sum_{i : z_i > 0} e_i \mathbf{x}_i^T", (1, n), "1 x n",
             None if grad_w is None else _mat(grad_w), chain=("dC/dv", "dv/dw"),
             note="evaluated through the chain: Σᵢ ∂C/∂vᵢ · ∂vᵢ/∂w = Σᵢ (2/N) vᵢ · (−∂aᵢ/∂w)"),
        Step("dC/db", "∂C/∂b", rf"\frac{{{P} C}}{{{P} b}}",
             "(2/N) Σ_{zᵢ > 0} eᵢ", r"\frac{2}{N} \sum_{i : z_i > 0} e_i", (1, 1), "1 x 1",
             None if grad_b is None else _mat(grad_b), chain=("dC/dv", "dv/db")),
    ]


def chain_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """dC/dw and dC/db multiplied out through the Jacobian chain, one sample at a time.

    For each sample: ``∂aᵢ/∂w = 1[zᵢ > 0] xᵢᵀ`` (section 5), ``∂vᵢ/∂w = −∂aᵢ/∂w`` and the
    upstream ``∂C/∂vᵢ = (2/N) vᵢ`` with ``vᵢ = yᵢ − aᵢ`` (section 6); the sample's term is their
    product. Vectorized over the samples of a block, but not the kernel's formula.

    X : ndarray of shape (N, n); y : ndarray of shape (N,).
    Returns (terms_w of shape (N, n), terms_b of shape (N,), z of shape (N,), e of shape (N,)).
    """
    N = X.shape[0]
    terms_w = np.empty_like(X, dtype=np.float64)
    terms_b = np.empty(N)
    zs = np.empty(N)
    for start in range(0, N, CHAIN_BLOCK_ROWS):
        Xb = X[start:start + CHAIN_BLOCK_ROWS]
        yb = y[start:start + CHAIN_BLOCK_ROWS]
        z = np.sum(Xb * w, axis=1) + b                     # y = sum(w ⊗ x), z = y + b
        da_dz = np.where(z > 0, 1.0, 0.0)                   # ReLU'(0) = 0
        da_dw = da_dz[:, None] * Xb                         # rows ∂aᵢ/∂w = ∂aᵢ/∂zᵢ · xᵢᵀ
        da_db = da_dz                                       # ∂aᵢ/∂b = ∂aᵢ/∂zᵢ · 1
        v = yb - np.maximum(z, 0.0)                         # v = y − u
        dC_dv = (2.0 / N) * v                               # upstream, one entry per sample
        terms_w[start:start + len(z)] = dC_dv[:, None] * (-da_dw) + 0.0   # + 0.0: no -0 in the table
        terms_b[start:start + len(z)] = dC_dv * (-da_db) + 0.0
        zs[start:start + len(z)] = z
    return terms_w, terms_b, zs, zs - y


def loss_value(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    """``C = (1/N) Σ (yᵢ − max(0, w·xᵢ + b))²``, straight from the definition."""
    r = y - np.maximum(X @ w + b, 0.0)
    return float(r @ r) / X.shape[0]


def central_differences(X, y, w, b, rel_step: float = FD_RELATIVE_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central differences of :func:`loss_value` in each of w_1..w_n, b.

    Returns (numeric of shape (n+1,), step of shape (n+1,), kink of shape (n+1,) bool): kink[j]
    when the ±step moves some z_i across (or onto) 0, where the loss has a kink.
    """
    theta = np.append(w, b).astype(np.float64)
    n = len(w)
    z = X @ w + b

    def loss_at(t):
        return loss_value(X, y, t[:n], t[n])

    steps = np.array([numeric.relative_step(theta[j], rel_step) for j in range(n + 1)])
    values = np.array([numeric.central_difference(loss_at, theta, j, steps[j]) for j in range(n + 1)])
    # kink[j]: some sample straddles for parameter j, so values[j] mixes the two sides of the kink.
    kink = np.array([numeric.straddles_kink(z, numeric.z_slope(X, j), steps[j]).any() for j in range(n + 1)], dtype=bool)
    return values, steps, kink


def relative_error(p: np.ndarray, q: np.ndarray, floor=None) -> np.ndarray:
    """|p − q| / max(|p|, |q|, floor), element-wise.

    ``floor`` (scalar or per entry) is the size below which a difference is noise, not error:
    by default 1e-12 · max|p|, so that entries that should be 0 compare sensibly.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if floor is None:
        floor = 1e-12 * float(np.max(np.abs(p), initial=0.0))
    floor = np.maximum(floor, 1e-300)
    return np.abs(p - q) / np.maximum(np.maximum(np.abs(p), np.abs(q)), floor)


def three_way_check(X, y, w, b, chain_w: np.ndarray, chain_b: float, labels: list[str],
                    term_scale: np.ndarray | None = None) -> Check:
    """Compare the chain's gradient with the kernel's and with central differences.

    Each entry's error is measured relative to the larger of itself and the gradient's largest
    entry (an entry that should be 0 is compared with the gradient's size, not with 0). Below
    the rounding noise the comparison cannot see, nothing counts: for central differences that
    noise is about eps · C / h, for two ways of summing N terms about eps · Σᵢ |termᵢ|
    (``term_scale``, shape (n+1,)); both taken with a safety factor of 64.
    """
    lg = memory.loss_and_gradient(X, y, w, b)
    chain = np.append(chain_w, chain_b)
    kernel = np.append(lg.grad_w, lg.grad_b).astype(np.float64)
    differences, steps, kink = central_differences(X, y, w, b)
    shrunk = np.zeros_like(kink)
    if kink.any():  # gradcheck's remedy: a step below the closest sample's margin, where precision allows
        point = gradcheck.check_point(X, y, np.asarray(w, dtype=np.float64), float(b), jacobian="projection")
        for j, p in enumerate(point.parameters):
            if kink[j] and p.action == "shrunk_step" and p.status != "inconclusive":
                differences[j], steps[j], kink[j], shrunk[j] = p.numeric, p.step, False, True
    eps = np.finfo(np.float64).eps
    size = float(np.max(np.abs(chain)))
    sum_noise = 64 * eps * (np.abs(chain) if term_scale is None else term_scale)
    fd_noise = 64 * eps * abs(loss_value(X, y, w, b)) / steps
    err = relative_error(chain, kernel, np.maximum(size, sum_noise / CHECK_TOLERANCE))
    err_num = relative_error(chain, differences, np.maximum(size, fd_noise / CHECK_TOLERANCE))[~kink]
    max_err = float(max(err.max(initial=0.0), err_num.max(initial=0.0)))
    return Check(labels=labels, chain=chain, kernel=kernel, numeric=differences, kink=kink, step=steps,
                 max_rel_error=max_err, tolerance=CHECK_TOLERANCE, shrunk=shrunk)


def derive_neuron(
    *,
    n_features: int,
    feature_names: list[str],
    target: str = "y",
    source: str,
    units: str,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    w: np.ndarray | None = None,
    b: float | None = None,
    sample: int = 0,
    place_of: Callable[[int], str | None] | None = None,
    parameters_from: str = "",
    indices: np.ndarray | None = None,
) -> Derivation:
    """The derivation; with X, y, w, b also evaluated at sample ``sample`` and over all of X.

    X : ndarray of shape (N, n) (the data after preprocessing); y : ndarray of shape (N,);
    w : ndarray of shape (n,); b : float. ``place_of(i)`` names where row i is in the data
    set ("line 7", "row 6", "part-0003.csv, line 7"). The caller checks that ``0 <= sample < N``.
    ``indices``: the training-split index of each row of X, when X is a sample of the split
    (the report names rows by them); None: row i is sample i.
    """
    n = n_features
    if X is None:
        return Derivation(n_features=n, feature_names=feature_names, target=target, source=source, units=units,
                          definitions=definitions(), steps=neuron_steps(n) + loss_steps(n),
                          loss=LossSection(loss_formulas()), evaluated=False)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    b = float(b)
    N = X.shape[0]
    place_of = place_of or (lambda i: None)
    x = X[sample]
    terms_w, terms_b, z, e = chain_gradient(X, y, w, b)
    grad_w = terms_w.sum(axis=0)
    grad_b = float(terms_b.sum())
    assert grad_w.shape == (n,)

    def row(i: int) -> SampleRow:
        return SampleRow(index=i if indices is None else int(indices[i]), place=place_of(i), z=float(z[i]), active=bool(z[i] > 0), error=float(e[i]),
                         grad_w=terms_w[i].copy(), grad_b=float(terms_b[i]))

    if N <= TABLE_ROWS_MAX:
        head, tail, omitted = [row(i) for i in range(N)], [], 0
    else:
        k = TABLE_ROWS_EACH_END
        head = [row(i) for i in range(k)]
        tail = [row(i) for i in range(N - k, N)]
        omitted = N - 2 * k
    loss = LossSection(
        formulas=loss_formulas(), n_samples=N, n_active=int(np.count_nonzero(z > 0)),
        loss=loss_value(X, y, w, b), rows_head=head, rows_tail=tail, n_omitted=omitted,
        grad_w=grad_w, grad_b=grad_b,
    )
    labels = [f"w[{name}]" for name in feature_names] + ["b"]
    return Derivation(
        n_features=n, feature_names=feature_names, target=target, source=source, units=units,
        definitions=definitions(), steps=neuron_steps(n, x, w, b) + loss_steps(n, grad_w, grad_b),
        loss=loss, evaluated=True, sample_index=sample if indices is None else int(indices[sample]), sample_place=place_of(sample), x=x.copy(),
        y=float(y[sample]), w=w.copy(), b=b, z=float(z[sample]), parameters_from=parameters_from,
        check=three_way_check(X, y, w, b, grad_w, grad_b, labels,
                              np.append(np.abs(terms_w).sum(axis=0), np.abs(terms_b).sum())),
    )


def derive_example(show_jacobians: bool, sample: int = 0) -> Derivation:
    """The built-in 3-feature example (used when no config is given)."""
    common = dict(n_features=3, feature_names=list(EXAMPLE_FEATURES), target="y",
                  source="built-in example (3 features, 4 samples)", units="the example's own units")
    if not show_jacobians:
        return derive_neuron(**common)
    return derive_neuron(**common, X=EXAMPLE_X, y=EXAMPLE_Y, w=EXAMPLE_W, b=EXAMPLE_B, sample=sample,
                         parameters_from="the example's parameters")


# ----------------------------------------------------------------------------- section 4.5.3


@dataclass(frozen=True)
class VectorChainRule:
    """The worked example of section 4.5.3 at a point x: ``y = f(g(x)) = [ln(x²), sin(3x)]``.

    steps : df/dg (2 x 2), dg/dx (2 x 1) and their product dy/dx (2 x 1), all evaluated at x
    closed_form : ``[2/x, 3 cos(3x)]`` as a (2, 1) array; numeric : central differences of y
    """

    x: float
    definitions: list[Formula]
    steps: list[Step]
    closed_form: np.ndarray
    numeric: np.ndarray
    max_rel_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_rel_error <= self.tolerance)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


def vector_chain_rule_y(x: float) -> np.ndarray:
    return np.array([math.log(x * x), math.sin(3 * x)])


def derive_vector_chain_rule(x: float) -> VectorChainRule:
    """Section 4.5.3 evaluated at ``x`` (x != 0, since ln(x²) needs x² > 0)."""
    x = float(x)
    g = np.array([x * x, 3 * x])
    df_dg = np.array([[1 / g[0], 0.0], [0.0, math.cos(g[1])]])   # 2 x 2
    dg_dx = np.array([[2 * x], [3.0]])                            # 2 x 1
    dy_dx = df_dg @ dg_dx                                         # 2 x 1: the order matters
    closed = np.array([[2 / x], [3 * math.cos(3 * x)]])
    h = numeric.relative_step(x, FD_RELATIVE_STEP)
    differences = numeric.central_difference(lambda t: vector_chain_rule_y(t[0]), np.array([x]), 0, h).reshape(2, 1)
    err = float(max(relative_error(dy_dx.ravel(), closed.ravel()).max(),
                    relative_error(dy_dx.ravel(), differences.ravel()).max()))
    P = r"\partial"
    steps = [
        Step("df/dg", "∂f/∂g", rf"\frac{{{P} \mathbf{{f}}}}{{{P} \mathbf{{g}}}}",
             "[[1/g₁, 0], [0, cos g₂]]",
             r"\begin{bmatrix} 1/g_1 & 0 \\ 0 & \cos g_2 \end{bmatrix}", (2, 2), "2 x 2", df_dg,
             note="f₁ depends on g₁ only, f₂ on g₂ only: a diagonal Jacobian"),
        Step("dg/dx", "∂g/∂x", rf"\frac{{{P} \mathbf{{g}}}}{{{P} x}}",
             "[2x, 3]ᵀ", r"\begin{bmatrix} 2x \\ 3 \end{bmatrix}", (2, 1), "2 x 1", dg_dx),
        Step("dy/dx", "∂y/∂x", rf"\frac{{{P} \mathbf{{y}}}}{{{P} x}}",
             "∂f/∂g · ∂g/∂x = [2x/x², 3 cos(3x)]ᵀ = [2/x, 3 cos(3x)]ᵀ",
             rf"\frac{{{P} \mathbf{{f}}}}{{{P} \mathbf{{g}}}} \frac{{{P} \mathbf{{g}}}}{{{P} x}} = "
             r"\begin{bmatrix} 2x/x^2 \\ 3\cos(3x) \end{bmatrix} = \begin{bmatrix} 2/x \\ 3\cos(3x) \end{bmatrix}",
             (2, 1), "2 x 1", dy_dx, chain=("df/dg", "dg/dx"), factors=(df_dg, dg_dx), note="(2 x 2)(2 x 1) = 2 x 1"),
    ]
    defs = [
        Formula("y(x) = [ln(x²), sin(3x)]ᵀ", r"\mathbf{y}(x) = \begin{bmatrix} \ln(x^2) \\ \sin(3x) \end{bmatrix}"),
        Formula("g(x) = [x², 3x]ᵀ", r"\mathbf{g}(x) = \begin{bmatrix} x^2 \\ 3x \end{bmatrix}", "intermediate variables"),
        Formula("f(g) = [ln g₁, sin g₂]ᵀ", r"\mathbf{f}(\mathbf{g}) = \begin{bmatrix} \ln g_1 \\ \sin g_2 \end{bmatrix}",
                "so y = f(g(x))"),
        Formula("∂/∂x f(g(x)) = ∂f/∂g · ∂g/∂x", r"\frac{\partial}{\partial x} \mathbf{f}(\mathbf{g}(x)) = "
                r"\frac{\partial \mathbf{f}}{\partial \mathbf{g}} \frac{\partial \mathbf{g}}{\partial x}",
                "the vector chain rule: an (m x k)(k x n) product, in this order"),
    ]
    return VectorChainRule(x=x, definitions=defs, steps=steps, closed_form=closed, numeric=differences,
                           max_rel_error=err, tolerance=CHECK_TOLERANCE)
