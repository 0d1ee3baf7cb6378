"""Finite differences against the hand-derived gradients, with the ReLU kink handled, not hidden.

For every parameter theta_j of the neuron (``w_1..w_n``, then ``b``) the analytic ``dC/dtheta_j``
of ``grad_fn`` is compared with a central difference of the loss, computed here, in float64,
from :func:`neuron.forward` alone (never from ``grad_fn``). The loss is a mean of per-sample
terms ``l_i = (max(0, z_i) - y_i)^2`` and each term is piecewise quadratic in theta_j, so a
central difference is exact up to rounding unless the step carries ``z_i`` across 0.

The kink (docs/math.md, "Where it goes wrong"): sample i *straddles* the kink for theta_j at step h when
``|z_i| <= h |dz_i/dtheta_j|`` (``x_ij`` for ``w_j``, 1 for ``b``). Its *margin* ``|z_i| / |dz_i/dtheta_j|``
is the largest step that keeps it on one side. Both tests and the differences themselves are
:mod:`neurocli.numeric`'s; the policy is this module's. When samples straddle, the check

1. shrinks the step to half the smallest margin if the rounding error of the difference at
   that step stays within the tolerance ("shrunk_step"); otherwise
2. excludes the straddling samples from BOTH sides: the analytic gradient is recomputed by
   ``grad_fn`` on the remaining samples and compared with the difference of their mean loss
   ("excluded");
3. at an exact tie (``z_i == 0``, margin 0, no step helps) takes one-sided differences of that
   sample's term on each side. The convention ReLU'(0) = 0 makes a tied sample inactive, so its
   reference is the one-sided difference on the side where z decreases (the flat side); the
   analytic value must also lie between the left and right one-sided differences (summed per
   tied sample, so that ties moving in opposite directions are bracketed too).

Data of any size: on more than :data:`MAX_ROWS` rows (a parameter of :func:`check`), both
sides are evaluated on a seeded sample of that many rows, not by an engine on all of them,
because the check holds several float64 arrays of N x (n+1) values and evaluates the loss
many times a parameter, while the gradient is a mean of per-row terms, so a wrong formula
shows on any sample of rows as on all of them. The sample is drawn from the seed (the same
seed, the same rows), its indices sorted so that the rows it names are in data-set order;
smaller data is checked on every row. The report says which (:attr:`GradcheckReport.rows`).

Nothing here prints; :func:`check` returns a :class:`GradcheckReport` that ``render.gradcheck``
shows and serializes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from neurocli import neuron, numeric
from neurocli.engines import memory

EPS64 = float(np.finfo(np.float64).eps)
# Relative step: h_j = eps * max(1, |theta_j|). The cube root of machine epsilon balances
# truncation and rounding for central differences of a smooth function (~6.1e-6).
DEFAULT_EPS = EPS64 ** (1.0 / 3.0)
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8
SWEEP_STEPS = tuple(10.0 ** -k for k in range(2, 11))  # 1e-2 ... 1e-10
SHOWN_INDICES = 5
FULL_JACOBIAN_MAX_ENTRIES = 200_000  # N x (n+1) above this: seeded projections u^T J v
N_PROJECTIONS = 3
MAX_ROWS = 100_000  # rows checked at most: larger data is checked on a seeded sample of this many
SAMPLE_STREAM = 8  # the sample's random stream: (seed, 8), apart from the seed's other streams
CONVENTION = ("ReLU'(0) = 0: a sample with z = 0 is inactive; its reference derivative is the "
              "one-sided difference on the side where z decreases")

GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray, float], "neuron.LossGrad"]


@dataclass
class TieCheck:
    """Exact ties (z_i = 0) for one parameter: one-sided differences of the loss on each side."""

    n_ties: int
    left: float  # d C / d theta_j from below (theta_j - h, theta_j - 2h)
    right: float  # from above
    analytic: float
    # Every tied sample's term has a left and a right slope; the analytic value must lie in
    # [lo, hi] = the rest's slope + the sum over ties of [min(left_i, right_i), max(left_i, right_i)].
    # With one tie (or ties all moving the same way) that is [min(left, right), max(left, right)].
    lo: float
    hi: float
    within: bool  # up to the tolerance


@dataclass
class ParameterResult:
    """The comparison for one parameter at one point.

    ``status`` is "pass", "fail" or "inconclusive" (every sample excluded); ``passed`` is None
    when inconclusive. ``tolerance = atol + rtol * max(|analytic|, |numeric|) + roundoff``.
    """

    name: str
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    tolerance: float
    roundoff: float
    status: str
    requested_step: float
    step: float
    straddling: int
    indices: list[int]
    min_margin: float | None
    action: str  # "none" | "shrunk_step" | "excluded"
    excluded: int
    n_used: int
    tie_check: TieCheck | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.status == "inconclusive" else self.status == "pass"

    @property
    def badness(self) -> float:
        """abs_error / tolerance: above 1 fails; used to sort worst first."""
        if self.status == "inconclusive":
            return -1.0
        if self.tolerance > 0:
            return self.abs_error / self.tolerance
        return math.inf if self.abs_error > 0 else 0.0


@dataclass
class JacobianResult:
    """The per-sample Jacobian d a / d (w, b), N x (n+1), against finite differences."""

    mode: str  # "full" or "projection"
    entries: int  # entries (full) or projections compared
    excluded: int  # entries (or straddling samples) left out
    max_abs_error: float
    max_rel_error: float
    passed: bool
    detail: str


@dataclass
class KinkReport:
    """Straddling samples at one point, over all parameters."""

    straddling: int  # distinct samples straddling for at least one parameter at the requested step
    indices: list[int]  # first few of them (0-based sample indices)
    min_margin: float | None
    ties: int  # samples exactly at z = 0 (that move with some parameter)
    action: str  # "none" | "shrunk_step" | "excluded" (the strongest used for any parameter)
    closest: int | None = None  # the sample with the smallest margin for any parameter
    closest_margin: float | None = None


@dataclass
class SweepRow:
    step: float  # relative step: h_j = step * max(1, |theta_j|)
    abs_errors: list[float]  # per parameter, plain central difference (no kink handling)
    straddling: list[int]


@dataclass
class PointReport:
    label: str
    w: np.ndarray
    b: float
    n_samples: int
    n_active: int
    parameters: list[ParameterResult]
    jacobian: JacobianResult
    kink: KinkReport
    deterministic: bool
    verdict: str
    reason: str
    sweep: list[SweepRow] | None = None


@dataclass
class GradcheckReport:
    verdict: str  # "pass" | "fail" | "inconclusive"
    reason: str
    eps: float | None  # as requested (None: the default relative step DEFAULT_EPS)
    rtol: float
    atol: float
    dtype: str
    n_samples: int  # rows checked
    feature_names: list[str]
    points: list[PointReport] = field(default_factory=list)
    convention: str = CONVENTION
    rows_total: int | None = None  # rows of the data given (None: n_samples)
    # the sample's rows, sorted 0-based indices into the data given; None when every row is checked
    rows: np.ndarray | None = None
    sample_seed: int | None = None  # the seed the sample was drawn from

    @property
    def base(self) -> PointReport:
        return self.points[0]

    @property
    def sampled(self) -> bool:
        return self.rows is not None

    def row(self, k: int) -> int:
        """The index in the data given of checked sample ``k`` (the one the point reports name)."""
        return int(k) if self.rows is None else int(self.rows[k])


# ----------------------------------------------------------------------------------------
# The independent side: differences in float64 from the forward kernel only (neurocli.numeric),
# with the kink policy of the module docstring.


def _z_scale(X64: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Per sample ``sum_k |x_ik w_k| + |b|``: the size of the terms whose rounding z carries."""
    return np.abs(X64) @ np.abs(theta[:-1]) + abs(float(theta[-1]))


def neuron_jacobian(X: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    """``d a / d (w, b)`` per sample (docs/math.md): ``1[z_i > 0] [x_i^T, 1]``, shape (N, n+1)."""
    m = neuron.active_mask(neuron.pre_activation(X, w, b))
    return m[:, None] * np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)])


@dataclass
class _KinkStep:
    """The step chosen for one direction and what it does to each sample (arrays of shape (N,))."""

    h: float
    action: str  # "none" | "shrunk_step" | "excluded"
    straddle: np.ndarray  # at the requested step
    tie: np.ndarray
    keep: np.ndarray  # compared; the others are excluded from both sides
    margins: np.ndarray


def _step_past_the_kink(z, d, h_req, h_floor, ambiguous) -> _KinkStep:
    """Steps 1 and 2 of the kink policy (module docstring) for a direction with slopes ``d = dz/dt``.

    z, d, ambiguous : shape (N,). ``h_floor`` is the smallest step whose rounding stays within
    the tolerance. Ties are kept for the one-sided differences (step 3); ``ambiguous`` samples
    are excluded like straddlers that no allowed step avoids.
    """
    tie = numeric.at_kink(z, d)
    margins = numeric.kink_margins(z, d)
    straddle = numeric.straddles_kink(z, d, h_req)
    live = straddle & ~tie
    exclude = ambiguous & (d != 0) & ~tie
    h, action = h_req, "none"
    if live.any():
        half = float(margins[live].min()) / 2
        if half >= h_floor:
            h, action = half, "shrunk_step"
        else:
            h = min(h, h_floor)
            exclude = exclude | (live & numeric.straddles_kink(z, d, h))
            action = "excluded"
    elif exclude.any():
        action = "excluded"
    return _KinkStep(h, action, straddle, tie, ~exclude, margins)


@dataclass
class _Direction:
    """Per-sample one-dimensional derivatives along ``theta + t * direction``."""

    h: float
    requested: float
    d: np.ndarray  # dz_i/dt
    straddle: np.ndarray  # at the requested step
    tie: np.ndarray
    keep: np.ndarray
    action: str
    margins: np.ndarray
    act: np.ndarray  # d a_i / dt: central; 0 at ties (the flat side, where a = 0 throughout)
    loss: np.ndarray  # d l_i / dt: central, or the flat side's one-sided difference at ties
    loss_left: np.ndarray
    loss_right: np.ndarray


def _directional(X64, y64, theta, direction, h_req, noise_num, target, ambiguous, theta_scale) -> _Direction:
    """Choose the step for one direction (kink policy in the module docstring) and difference.

    ``noise_num / h`` estimates the rounding error of the difference at step h; a step is
    allowed when that stays within ``target``. ``ambiguous`` marks samples whose sign of z the
    analytic dtype cannot resolve (float32): they are excluded like unresolvable straddlers.
    """
    z = neuron.pre_activation(X64, theta[:-1], float(theta[-1]))
    d = numeric.z_slope_along(X64, direction)
    h_floor = max(64 * EPS64 * theta_scale, noise_num / target if target > 0 else math.inf)
    step = _step_past_the_kink(z, d, h_req, h_floor, ambiguous)
    diffs = numeric.sample_differences(X64, y64, theta, direction, step.h)
    # ReLU'(0) = 0: a tie is inactive, so its side is the one where z decreases (t < 0 if
    # dz/dt > 0); there a_i = 0 at every step, so its one-sided difference of a_i is exactly 0.
    act = np.where(step.tie, 0.0, diffs.activation)
    loss = np.where(step.tie, np.where(d > 0, diffs.loss_left, diffs.loss_right), diffs.loss)
    return _Direction(step.h, h_req, d, step.straddle, step.tie, step.keep, step.action, step.margins,
                      act, loss, diffs.loss_left, diffs.loss_right)


def _parameter_direction(X64, y64, theta, j, rel_eps, noise_num, target, ambiguous) -> _Direction:
    """:func:`_directional` along parameter j alone, from the requested relative step ``rel_eps``."""
    unit = np.zeros(theta.size)
    unit[j] = 1.0
    theta_scale = max(1.0, abs(theta[j]))
    h_req = numeric.representable_step(theta[j], numeric.relative_step(theta[j], rel_eps))
    return _directional(X64, y64, theta, unit, h_req, noise_num, target, ambiguous, theta_scale)


# ----------------------------------------------------------------------------------------
# The round-off model and the comparison of one parameter.


def _rss(values: np.ndarray) -> float:
    """Safety factor 3 times the root sum of squares: the size of a sum of independent rounding errors."""
    return 3.0 * float(np.sqrt(np.sum(np.square(values))))


# A numeric difference whose rounding exceeds this fraction of the gradient proves nothing.
TOO_NOISY = 0.1


@dataclass
class _RoundingModel:
    """Estimated rounding errors at one point, per sample (arrays of shape (N,))."""

    z: np.ndarray  # the pre-activations, in float64
    terms: int  # n + 2: the roundings that make up each z_i
    scale_z: np.ndarray  # sum_k |x_ik w_k| + |b|
    residual: np.ndarray  # max(0, z_i) - y_i
    abs_y: np.ndarray
    loss: np.ndarray  # of l_i = (a_i - y_i)^2, in float64
    activation: np.ndarray  # of a_i, in float64
    ambiguous: np.ndarray  # z_i != 0 whose sign the analytic dtype cannot resolve


def _rounding_model(X64: np.ndarray, y64: np.ndarray, theta: np.ndarray, eps_a: float) -> _RoundingModel:
    """The rounding errors of l_i and a_i in float64 and of z in the analytic dtype (epsilon ``eps_a``).

    X64 : shape (N, n); y64 : shape (N,); theta : [w, b], shape (n+1,).
    """
    n_samples, n_features = X64.shape
    z = neuron.pre_activation(X64, theta[:-1], float(theta[-1]))
    scale_z = _z_scale(X64, theta)
    residual = np.maximum(z, 0) - y64
    # Errors of n + 2 roundings of size eps * |term| add like a random walk.
    k = n_features + 2
    loss_round = 2 * np.abs(residual) * EPS64 * (math.sqrt(k) * scale_z + np.abs(y64)) + 2 * EPS64 * residual ** 2
    act_round = EPS64 * math.sqrt(k) * scale_z
    ambiguous = (np.abs(z) <= eps_a * k * scale_z) & (z != 0) if eps_a > EPS64 else np.zeros(n_samples, bool)
    return _RoundingModel(z, k, scale_z, residual, np.abs(y64), loss_round, act_round, ambiguous)


def _passes(analytic: float, difference: float, rtol: float, atol: float, roundoff: float) -> tuple[float, float, float, bool]:
    abs_error = abs(analytic - difference)
    big = max(abs(analytic), abs(difference))
    rel_error = 0.0 if big == 0 else abs_error / big  # both zero counts as agreement
    tolerance = atol + rtol * big + roundoff
    return abs_error, rel_error, tolerance, bool(abs_error <= tolerance)


def _as_float(v) -> float:
    return float(np.asarray(v, dtype=np.float64).reshape(()))


def _gradient(grad_fn: GradFn, X, y, w, b, n_features: int) -> np.ndarray:
    """``grad_fn`` as one float64 vector ``[grad_w, grad_b]`` of shape (n+1,)."""
    lg = grad_fn(X, y, w, b)
    gw = np.asarray(lg.grad_w, dtype=np.float64).reshape(-1)
    if gw.shape != (n_features,):
        raise ValueError(f"grad_fn returned grad_w of shape {gw.shape}, expected ({n_features},)")
    return np.append(gw, _as_float(lg.grad_b))


@dataclass
class _AnalyticSide:
    """The gradient under test: ``grad_fn`` on (X, y) at (w, b), all in the analytic dtype."""

    grad_fn: GradFn
    X: np.ndarray  # (N, n)
    y: np.ndarray  # (N,)
    w: np.ndarray  # (n,)
    b: float
    eps: float  # machine epsilon of the analytic dtype
    gradient: np.ndarray  # [grad_w, grad_b] over all samples, shape (n+1,)

    def on(self, keep: np.ndarray) -> np.ndarray:
        """The gradient of the mean loss of the samples where ``keep`` (bool, (N,)), shape (n+1,)."""
        return _gradient(self.grad_fn, self.X[keep], self.y[keep], self.w, self.b, self.X.shape[1])


def _difference_roundoff(dr: _Direction, keep, n_used: int, rounding: _RoundingModel, eps_a: float) -> tuple[float, float]:
    """Estimated rounding errors (of the difference, of the analytic value) over the kept samples."""
    d_keep = np.abs(dr.d[keep])
    # The analytic value sums n_used terms of size ~ (|r_i| + scale_z_i + |y_i|) |dz_i/dt| in the
    # analytic dtype: n + 2 roundings in each z_i and about log2(n_used) more in the sum.
    analytic_round = eps_a * math.sqrt(rounding.terms + math.log2(n_used + 1)) * 2 * _rss(
        (np.abs(rounding.residual[keep]) + rounding.scale_z[keep] + rounding.abs_y[keep]) * d_keep) / n_used
    numeric_round = _rss(rounding.loss[keep]) / n_used / dr.h
    return numeric_round, analytic_round


def _tie_check(dr: _Direction, keep, n_used: int, analytic: float, roundoff: float, rtol, atol) -> TieCheck | None:
    """Step 3 of the kink policy: bracket ``analytic`` by the ties' one-sided differences (None: no tie)."""
    ties = dr.tie & keep
    if not ties.any():
        return None
    rest = keep & ~ties
    base = float(dr.loss[rest].sum())
    left = (base + float(dr.loss_left[ties].sum())) / n_used
    right = (base + float(dr.loss_right[ties].sum())) / n_used
    lo = (base + float(np.minimum(dr.loss_left, dr.loss_right)[ties].sum())) / n_used
    hi = (base + float(np.maximum(dr.loss_left, dr.loss_right)[ties].sum())) / n_used
    slack = atol + rtol * max(abs(lo), abs(hi), abs(analytic)) + roundoff
    within = bool(lo - slack <= analytic <= hi + slack)
    return TieCheck(int(ties.sum()), left, right, analytic, lo, hi, within)


def _compare_parameter(name: str, j: int, dr: _Direction, analytic_side: _AnalyticSide,
                       rounding: _RoundingModel, rtol: float, atol: float) -> ParameterResult:
    """Parameter j's analytic derivative against the difference ``dr`` along it, within the round-off.

    Samples excluded at the kink are left out of both sides; "inconclusive" when none is left or
    when the difference's rounding could hide a wrong gradient.
    """
    keep = dr.keep
    n_samples, n_used = keep.size, int(keep.sum())
    straddle_idx = np.flatnonzero(dr.straddle)
    min_margin = float(dr.margins[dr.straddle].min()) if straddle_idx.size else None
    common = dict(name=name, requested_step=dr.requested, step=dr.h, straddling=int(straddle_idx.size),
                  indices=[int(i) for i in straddle_idx[:SHOWN_INDICES]], min_margin=min_margin,
                  action=dr.action, excluded=n_samples - n_used, n_used=n_used)
    if n_used == 0:
        return ParameterResult(analytic=math.nan, numeric=math.nan, abs_error=math.nan, rel_error=math.nan,
                               tolerance=math.nan, roundoff=math.nan, status="inconclusive", **common)
    # Excluded from both sides: then the analytic gradient of the remaining samples' loss.
    analytic = float((analytic_side.gradient if n_used == n_samples else analytic_side.on(keep))[j])
    numeric_value = float(dr.loss[keep].sum()) / n_used
    numeric_round, analytic_round = _difference_roundoff(dr, keep, n_used, rounding, analytic_side.eps)
    roundoff = numeric_round + analytic_round
    abs_error, rel_error, tolerance, ok = _passes(analytic, numeric_value, rtol, atol, roundoff)
    measured = dict(analytic=analytic, numeric=numeric_value, abs_error=abs_error, rel_error=rel_error,
                    tolerance=tolerance, roundoff=roundoff)
    if numeric_round > TOO_NOISY * abs(analytic) and abs(analytic) > 10 * max(analytic_round, atol):
        # The step is so small that rounding in the difference could hide a gradient off by
        # a factor of two: the comparison proves nothing (see --sweep for a usable step).
        return ParameterResult(**measured, status="inconclusive", **common)
    tie_check = _tie_check(dr, keep, n_used, analytic, roundoff, rtol, atol)
    ok = ok and (tie_check is None or tie_check.within)
    return ParameterResult(**measured, status="pass" if ok else "fail", tie_check=tie_check, **common)


# ----------------------------------------------------------------------------------------
# One point: the kink summary, the verdict and the report.


def _summarize_kink(params: list[ParameterResult], columns: list[_Direction]) -> KinkReport:
    """The samples that straddle for any parameter, the ties, and the strongest action taken."""
    n_samples = columns[0].keep.size
    any_straddle = np.zeros(n_samples, bool)
    any_tie = np.zeros(n_samples, bool)
    for dr in columns:
        any_straddle |= dr.straddle
        any_tie |= dr.tie
    margins = [p.min_margin for p in params if p.min_margin is not None]
    all_margins = np.min(np.column_stack([dr.margins for dr in columns]), axis=1)
    closest = int(np.argmin(all_margins)) if np.isfinite(all_margins).any() else None
    actions = {p.action for p in params}
    return KinkReport(
        straddling=int(any_straddle.sum()),
        indices=[int(i) for i in np.flatnonzero(any_straddle)[:SHOWN_INDICES]],
        min_margin=min(margins) if margins else None,
        ties=int(any_tie.sum()),
        action="excluded" if "excluded" in actions else "shrunk_step" if "shrunk_step" in actions else "none",
        closest=closest,
        closest_margin=None if closest is None else float(all_margins[closest]),
    )


def _failure_reason(failed: list[str], jacobian_passed: bool, deterministic: bool) -> str:
    why = []
    if failed:
        why.append(f"{', '.join(failed)} disagree{'s' if len(failed) == 1 else ''} with central differences")
    if not jacobian_passed:
        why.append("the per-sample Jacobian disagrees with finite differences")
    if not deterministic:
        why.append("the analytic gradient differs between two identical calls (nondeterministic)")
    return "; ".join(why)


def _inconclusive_reason(params: list[ParameterResult]) -> str:
    empty = [p.name for p in params if p.status == "inconclusive" and p.n_used == 0]
    noisy = [p.name for p in params if p.status == "inconclusive" and p.n_used > 0]
    why = []
    if empty:
        why.append("every sample straddles the kink for " + ", ".join(empty) + ": nothing left to compare")
    if noisy:
        why.append("the step is too small for float64 for " + ", ".join(noisy) + ": rounding in the "
                   "difference exceeds a tenth of the gradient, so a wrong gradient could pass; use a "
                   "larger --eps (--sweep shows the error against the step)")
    return "; ".join(why)


def _point_verdict(params: list[ParameterResult], jac: JacobianResult, deterministic: bool,
                   n_active: int, n_samples: int, loss: float, z_max: float) -> tuple[str, str]:
    """(verdict, reason): "inconclusive" if the loss overflows float64 there, "fail" if anything
    disagrees, "inconclusive" if nothing is active or a parameter proves nothing, else "pass"."""
    if not math.isfinite(loss) or any(math.isinf(v) for p in params for v in (p.analytic, p.numeric)):
        return "inconclusive", (f"the loss overflows float64 at or beside these parameters (|z_i| up to "
                                f"{z_max:.3g}): neither gradient can be measured there")
    failed = [p.name for p in params if p.status == "fail"]
    if failed or not jac.passed or not deterministic:
        return "fail", _failure_reason(failed, jac.passed, deterministic)
    if n_active == 0:
        return "inconclusive", ("no sample is active (every z_i <= 0): both gradients are zero by construction, "
                                "so their agreement proves nothing")
    if any(p.status == "inconclusive" for p in params):
        return "inconclusive", _inconclusive_reason(params)
    return "pass", f"all {len(params)} gradients agree with central differences ({n_active} of {n_samples} samples active)"


@np.errstate(over="ignore", invalid="ignore")  # an overflow ends in the verdict (inconclusive), not a warning
def check_point(X, y, w, b, grad_fn: GradFn | None = None, *, eps=None, rtol=DEFAULT_RTOL,
                atol=DEFAULT_ATOL, names=None, label="given parameters", jacobian="auto", sweep=False,
                seed=0) -> PointReport:
    """Check ``grad_fn`` at one point (w, b) on (X, y).

    X : ndarray of shape (n_samples, n_features), in the dtype the analytic side should use;
    y : ndarray of shape (n_samples,); w : ndarray of shape (n_features,); b : float.
    ``grad_fn(X, y, w, b)`` returns an object with ``.grad_w`` (n_features,) and ``.grad_b``
    (default: :func:`memory.loss_and_gradient`, looked up at call time).
    """
    grad_fn = memory.loss_and_gradient if grad_fn is None else grad_fn
    n_samples, n_features = X.shape
    names = names or [f"x{k + 1}" for k in range(n_features)]
    pnames = [f"w[{nm}]" for nm in names] + ["b"]
    dtype = np.result_type(X, w)
    eps_a = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else EPS64
    X64 = np.asarray(X, dtype=np.float64)
    y64 = np.asarray(y, dtype=np.float64)
    w_a = np.asarray(w, dtype=dtype)
    b_a = dtype.type(b)
    theta = np.append(w_a.astype(np.float64), float(b_a))
    rel_eps = DEFAULT_EPS if eps is None else float(eps)
    rounding = _rounding_model(X64, y64, theta, eps_a)
    n_active = int(np.count_nonzero(neuron.active_mask(rounding.z)))

    first = _gradient(grad_fn, X, y, w_a, b_a, n_features)
    second = _gradient(grad_fn, X, y, w_a, b_a, n_features)
    deterministic = bool(np.array_equal(first, second, equal_nan=True))
    g_scale = float(np.max(np.abs(first))) if first.size else 0.0
    # The rounding a difference may carry: half the tolerance at the gradient's size.
    target = 0.5 * (atol + rtol * g_scale)
    noise_num = _rss(rounding.loss) / n_samples
    analytic = _AnalyticSide(grad_fn, X, y, w_a, b_a, eps_a, first)

    params: list[ParameterResult] = []
    columns: list[_Direction] = []
    for j in range(n_features + 1):
        dr = _parameter_direction(X64, y64, theta, j, rel_eps, noise_num, target, rounding.ambiguous)
        columns.append(dr)
        params.append(_compare_parameter(pnames[j], j, dr, analytic, rounding, rtol, atol))

    jac = _check_jacobian(X64, y64, theta, columns, rtol, atol, rounding.activation, rounding.ambiguous,
                          jacobian, seed, rel_eps)
    kink = _summarize_kink(params, columns)
    loss = float(np.mean(rounding.residual ** 2)) if n_samples else 0.0
    z_max = float(np.max(np.abs(rounding.z))) if n_samples else 0.0
    verdict, reason = _point_verdict(params, jac, deterministic, n_active, n_samples, loss, z_max)
    sweep_rows = _sweep(X64, y64, theta, first) if sweep else None
    return PointReport(label=label, w=theta[:-1].copy(), b=float(theta[-1]), n_samples=n_samples, n_active=n_active,
                       parameters=params, jacobian=jac, kink=kink, deterministic=deterministic, verdict=verdict,
                       reason=reason, sweep=sweep_rows)


def _check_jacobian(X64, y64, theta, columns, rtol, atol, act_round, ambiguous, mode, seed, rel_eps) -> JacobianResult:
    n_samples, n_params = X64.shape[0], theta.size
    if mode == "auto":
        mode = "full" if n_samples * n_params <= FULL_JACOBIAN_MAX_ENTRIES else "projection"
    w, b = theta[:-1], float(theta[-1])
    if mode == "full":
        analytic = neuron_jacobian(X64, w, b)
        differences = np.column_stack([dr.act for dr in columns])
        keep = np.column_stack([dr.keep for dr in columns])
        steps = np.array([dr.h for dr in columns])
        err = np.abs(analytic - differences)
        big = np.maximum(np.abs(analytic), np.abs(differences))
        tol = atol + rtol * big + 3 * act_round[:, None] / steps[None, :]
        err_k = np.where(keep, err, 0.0)
        rel = np.where(keep & (big > 0), err / np.where(big > 0, big, 1.0), 0.0)
        passed = bool(np.all(err_k <= tol))
        n_excl = int((~keep).sum())
        detail = (f"full {n_samples} x {n_params} matrix, column by column"
                  + (f"; {n_excl} entries excluded at the kink" if n_excl else ""))
        return JacobianResult("full", int(keep.sum()), n_excl, float(err_k.max(initial=0.0)),
                              float(rel.max(initial=0.0)), passed, detail)
    # Projection ("fast mode"): u^T J v, analytic through neuron.backward: J^T u = backward(u).
    rng = np.random.default_rng([seed, 7])
    worst_abs = worst_rel = 0.0
    passed = True
    n_excl = 0
    _, cache = neuron.forward(X64, w, b)
    for _ in range(N_PROJECTIONS):
        u = rng.standard_normal(n_samples)
        v = rng.standard_normal(n_params)
        scale = max(1.0, float(np.max(np.abs(theta))))
        noise_num = _rss(u * act_round)
        dr = _directional(X64, y64, theta, v, rel_eps * scale, noise_num, 0.5 * atol + 0.5 * rtol * float(
            np.abs(u).sum()), ambiguous, scale)
        keep = dr.keep
        grad_w, grad_b = neuron.backward(np.where(keep, u, 0.0), cache)
        analytic = float(grad_w @ v[:-1] + grad_b * v[-1])
        difference = float((u[keep] * dr.act[keep]).sum())
        roundoff = _rss(u[keep] * act_round[keep]) / dr.h
        abs_e, rel_e, _, ok = _passes(analytic, difference, rtol, atol, roundoff)
        worst_abs, worst_rel = max(worst_abs, abs_e), max(worst_rel, rel_e)
        passed = passed and ok
        n_excl += int((~keep).sum())
    detail = (f"{N_PROJECTIONS} seeded random projections u^T J v (J is {n_samples} x {n_params}; "
              f"--jacobian full for the whole matrix)" + (f"; {n_excl} samples excluded at the kink" if n_excl else ""))
    return JacobianResult("projection", N_PROJECTIONS, n_excl, worst_abs, worst_rel, passed, detail)


def _sweep(X64, y64, theta, analytic) -> list[SweepRow]:
    """Plain central differences of the mean loss (no kink handling) for every relative step."""
    def mean_loss(t):
        return neuron.mse_forward(numeric.activations(X64, t), y64)[0]

    rows = []
    z = neuron.pre_activation(X64, theta[:-1], float(theta[-1]))
    for step in SWEEP_STEPS:
        errors, straddles = [], []
        for j in range(theta.size):
            h = numeric.representable_step(theta[j], numeric.relative_step(theta[j], step))
            errors.append(abs(analytic[j] - numeric.central_difference(mean_loss, theta, j, h)))
            straddles.append(int(np.count_nonzero(numeric.straddles_kink(z, numeric.z_slope(X64, j), h))))
        rows.append(SweepRow(step, errors, straddles))
    return rows


@np.errstate(over="ignore", invalid="ignore")  # an overflow ends in the verdict (inconclusive), not a warning
def random_points(X: np.ndarray, w: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, float]]:
    """K seeded parameter points at the scale of w, each with a mix of active and inactive samples.

    w ~ N(0, max(1, rms(w))^2) per feature; b puts the kink at a random quantile (10% to 90%)
    of ``X w``, so that every point has samples on both sides of z = 0.
    """
    rng = np.random.default_rng([seed, 3])
    scale = max(1.0, float(np.sqrt(np.mean(np.asarray(w, dtype=np.float64) ** 2))))
    out = []
    for _ in range(k):
        wk = rng.normal(0.0, scale, X.shape[1])
        q = rng.uniform(0.1, 0.9)
        bk = -float(np.quantile(np.asarray(X, dtype=np.float64) @ wk, q))
        out.append((wk.astype(np.result_type(X, w)), bk))
    return out


def sample_rows(n_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted 0-based indices of ``max_rows`` of ``n_rows`` rows, drawn without replacement from
    the stream (seed, :data:`SAMPLE_STREAM`); None when ``n_rows <= max_rows`` (every row is used)."""
    if n_rows <= max_rows:
        return None
    return np.sort(np.random.default_rng([seed, SAMPLE_STREAM]).choice(n_rows, size=max_rows, replace=False))


@np.errstate(over="ignore", invalid="ignore")  # an overflow ends in the verdict (inconclusive), not a warning
def check(X, y, w, b, grad_fn: GradFn | None = None, *, eps=None, rtol=DEFAULT_RTOL,
          atol=DEFAULT_ATOL, names=None, points=0, seed=0, jacobian="auto", sweep=False,
          label="given parameters", max_rows: int = MAX_ROWS,
          progress: Callable[[int, int], None] | None = None) -> GradcheckReport:
    """Check ``grad_fn`` at (w, b) and at ``points`` seeded random points; see the module docstring.

    X : ndarray of shape (n_samples, n_features); y : ndarray of shape (n_samples,);
    w : ndarray of shape (n_features,); b : float. ``eps`` is the relative step
    (h_j = eps * max(1, |theta_j|), default :data:`DEFAULT_EPS`); a parameter passes when
    ``|a - n| <= atol + rtol * max(|a|, |n|) + roundoff`` (the estimated rounding error).
    More than ``max_rows`` rows: both sides on a sample of that many (:func:`sample_rows`,
    from ``seed``); the report's indices are then positions in the sample (``report.row``).
    The verdict: "fail" if any point fails; "inconclusive" if no point is conclusive
    (no active sample, or nothing left after excluding straddlers); else "pass".
    ``progress(done, points)`` is told each random point checked.
    """
    rows = sample_rows(X.shape[0], max_rows, seed)
    checked = (X, y) if rows is None else (X[rows], y[rows])
    report = _check_all(*checked, w, b, grad_fn, eps=eps, rtol=rtol, atol=atol, names=names, points=points,
                        seed=seed, jacobian=jacobian, sweep=sweep, label=label, progress=progress)
    report.rows_total, report.rows = X.shape[0], rows
    report.sample_seed = None if rows is None else seed
    return report


def _check_all(X, y, w, b, grad_fn: GradFn | None, *, eps, rtol, atol, names, points, seed, jacobian, sweep,
               label, progress=None) -> GradcheckReport:
    """:func:`check` on every row of (X, y)."""
    names = list(names) if names else [f"x{k + 1}" for k in range(X.shape[1])]
    opts = dict(eps=eps, rtol=rtol, atol=atol, names=names, jacobian=jacobian, seed=seed)
    reports = [check_point(X, y, w, b, grad_fn, label=label, sweep=sweep, **opts)]
    for i, (wk, bk) in enumerate(random_points(X, w, points, seed), start=1):
        reports.append(check_point(X, y, wk, bk, grad_fn, label=f"random point {i} (seed {seed})", **opts))
        if progress is not None:
            progress(i, points)
    verdicts = [r.verdict for r in reports]
    if "fail" in verdicts:
        verdict = "fail"
        bad = [r for r in reports if r.verdict == "fail"]
        reason = f"{bad[0].label}: {bad[0].reason}" + (f" (and {len(bad) - 1} more point(s))" if len(bad) > 1 else "")
    elif "pass" not in verdicts:
        verdict, reason = "inconclusive", reports[0].reason
    else:
        verdict = "pass"
        n_pass = verdicts.count("pass")
        reason = reports[0].reason if len(reports) == 1 else f"{n_pass} of {len(reports)} points pass"
        if "inconclusive" in verdicts:
            reason += f"; {verdicts.count('inconclusive')} inconclusive (see below)"
    return GradcheckReport(verdict=verdict, reason=reason, eps=eps, rtol=rtol, atol=atol,
                           dtype=str(np.result_type(X, w)), n_samples=X.shape[0], feature_names=names, points=reports)


def builtin_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, float, list[str]]:
    """A small deterministic problem for ``neurocli gradcheck`` without a config.

    w = [0.5, -0.25, 1], b = 0.125, 8 samples of 3 features: 4 active, 2 inactive, one exactly
    at the kink (z = 0.25 - 0.375 + 0 + 0.125 = 0, exact in binary) and one at z ~ 1e-8, which
    straddles the kink at the default step. Targets are nonzero, so inactive samples matter.
    """
    w = np.array([0.5, -0.25, 1.0])
    b = 0.125
    X = np.array([
        [1.0, 0.5, 0.25],     # z = 0.5 - 0.125 + 0.25 + 0.125 = 0.75
        [2.0, -1.0, 0.5],     # z = 1 + 0.25 + 0.5 + 0.125 = 1.875
        [-1.0, 2.0, -0.5],    # z = -0.5 - 0.5 - 0.5 + 0.125 = -1.375 (inactive)
        [0.5, 1.5, 0.0],      # z = 0.25 - 0.375 + 0 + 0.125 = 0 (exact tie)
        [0.0, 0.0, 0.0],      # z = 0.125
        [-2.0, 0.0, -1.0],    # z = -1 - 1 + 0.125 = -1.875 (inactive)
        [1.5, 0.25, 0.5],     # z = 0.75 - 0.0625 + 0.5 + 0.125 = 1.3125
        [0.25, 0.5, 0.0],     # third feature set below so that z ~ 1e-8
    ])
    X[7, 2] = 1e-8 - (0.25 * 0.5 - 0.5 * 0.25 + b)  # z = 0.125 - 0.125 + x3 + 0.125 ~ 1e-8
    y = np.array([1.0, 2.5, 0.5, 0.75, 0.25, 1.0, 1.0, 0.5])
    return X, y, w, b, ["x1", "x2", "x3"]
