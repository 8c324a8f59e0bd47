"""``measure(policy, ...)``: how many nats of optimization (Op) and impact (Imp) a policy applies.

The measures are defined in docs/spec.md §4.

>>> import measures
>>> r = measures.measure(lambda h: h[:, 0] % 8, task="ngood4", n_histories=1024, seed=0)  # any policy
>>> r.imp >= r.imp_min >= 0 and 0 <= r.success <= 1
True
>>> abs(measures.measure(lambda h: h[:, 0] * 0, n_histories=1024).op) < 1e-12  # a constant policy: Op = 0
True
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from measures import monte_carlo
from measures.baselines import baseline_name, check_baseline, reference_probs
from measures.intervals import Interval, bootstrap_interval
from measures.policies import Policy, action_probabilities
from measures.split import Draws, estimate, group_histories, jackknife
from measures.theory import imp_min, op_theory
from seqenv.sequence import CONTEXT, N_OUT, natural_histories, transition_probs, validate_histories
from seqenv.tasks import GoodSpec, good_mask, task_name
from seqenv.validation import check_int, check_optional_seed, check_temperature

#: the estimators of Op and Imp, the values of ``measure(method=...)``: the exact split-history estimator or the
#: post's Monte Carlo sampling (not to be confused with ``estimator=``, the Monte Carlo count estimator of
#: :data:`measures.monte_carlo.ESTIMATORS`)
MEASURE_METHODS = ("exact", "monte_carlo")
#: default histories per method (the post: 200 x 10 repeats)
N_HISTORIES = dict(zip(MEASURE_METHODS, (4096, 200), strict=True))
FIGURES = ("op", "imp", "imp_min", "op_theory", "excess_op", "excess_imp", "success", "baseline_success")
#: the range each figure can take: a fallback interval (:func:`measures.intervals.bootstrap_interval`) stays in it
FIGURE_BOUNDS: dict[str, tuple[float, float]] = {
    "imp": (0.0, np.inf),
    "imp_min": (0.0, np.inf),
    "op_theory": (0.0, np.inf),
    "excess_imp": (0.0, np.inf),
    "success": (0.0, 1.0),
    "baseline_success": (0.0, 1.0),
}


class IntervalWarning(UserWarning):
    """Some bootstrap intervals are not BCa: the data at this N cannot support it (see ``ci_method``)."""


class NoIntervals(dict):
    """``MeasureResult.ci`` / ``se`` of a measurement without resamples: looking a figure up says why it is empty."""

    def __missing__(self, key: str) -> Any:
        raise KeyError(
            f"no interval for {key!r}: measured with n_bootstrap=0; pass n_bootstrap >= 2 for intervals"
        )


@dataclass(frozen=True)
class MeasureResult:
    """Op and Imp of a policy on one task, with the post's theory beside them. All measures in nats.

    :param op: optimization ``mean_j H(F'_j) - H(F)`` (split) or ``H(F') - H(F)``.
    :param imp: impact ``mean_j KL(F || F'_j)`` or ``KL(F || F')``.
    :param imp_min: the post's lower bound ``Imp_min(s, s')``.
    :param op_theory: the Op implied by the success rate, ``Op_theory(s, p)``.
    :param excess_op: ``op - op_theory`` (about 0 for a policy pursuing this task faithfully).
    :param excess_imp: ``imp - imp_min`` (>= 0).
    :param success: ``s = F(good)``, the policy's success rate.
    :param baseline_success: ``s'``, the success rate of the comparison future(s).
    :param p: the task's chance rate ``|good| / 8``.
    :param entropy: ``H(F)``.
    :param baseline_entropy: ``mean_j H(F'_j)`` or ``H(F')``.
    :param future: ``F`` over the next even token 0..7.
    :param baseline_future: ``mean_j F'_j`` or ``F'``.
    :param n: histories (per repeat for Monte Carlo).
    :param task: task id (or ``good{...}`` for a custom good set).
    :param method: ``"exact"`` or ``"monte_carlo"``.
    :param baseline: the comparison future's name.
    :param temperature: 0 = greedy.
    :param ci: 95% (``ci_level``) interval per figure: BCa bootstrap over histories (exact; bias-corrected
        and accelerated, see :mod:`measures.intervals`) or a Student-t interval over repeats (Monte Carlo).
        Empty with ``n_bootstrap=0``.
    :param se: standard error per figure: bootstrap standard deviation (exact) or std over repeats / sqrt(R).
    :param n_resamples: bootstrap resamples (exact) or repeats (Monte Carlo) behind ``ci`` and ``se``.
    :param ci_level: coverage of ``ci``.
    :param ci_method: how each interval was made: ``"bca"``; ``"jackknife"``, the fallback where the data
        cannot support BCa (few distinct histories or resample values, an extreme bias correction: the
        normal interval with the jackknife standard error, which comes with an :class:`IntervalWarning`);
        ``"t"`` (Monte Carlo repeats); ``"none"`` (a NaN estimate).
    """

    op: float
    imp: float
    imp_min: float
    op_theory: float
    excess_op: float
    excess_imp: float
    success: float
    baseline_success: float
    p: float
    entropy: float
    baseline_entropy: float
    future: tuple[float, ...]
    baseline_future: tuple[float, ...]
    n: int
    task: str
    method: str
    baseline: str
    temperature: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)
    n_resamples: int = 0
    ci_level: float = 0.95
    ci_method: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (JSON-serialisable): floats, ints, strings, lists and dicts."""
        d = asdict(self)
        d["future"], d["baseline_future"] = list(self.future), list(self.baseline_future)
        d["ci"] = {k: [lo, hi] for k, (lo, hi) in self.ci.items()}
        d["se"], d["ci_method"] = dict(self.se), dict(self.ci_method)
        return d

    def __str__(self) -> str:
        def fig(name: str) -> str:
            value = getattr(self, name)
            if name in self.ci:
                lo, hi = self.ci[name]
                return f"{name}={value:.4f} [{lo:.4f}, {hi:.4f}]"
            return f"{name}={value:.4f}"

        head = f"{self.task} ({self.method}, baseline={self.baseline}, T={self.temperature:g}, n={self.n}): "
        return head + ", ".join(
            fig(k) for k in ("op", "op_theory", "imp", "imp_min", "success", "baseline_success")
        )


@dataclass(frozen=True)
class Evaluation:
    """Everything one run computes before it is split into per-task results (used by cross and identify).

    ``figures``: per resample (exact: row 0 the sample, rows 1.. bootstrap) or per repeat (Monte Carlo).
    ``op``/``imp`` ``(B,)``; ``s``/``s_prime``/``op_theory``/``imp_min`` ``(B, K)``. ``jackknife`` (exact,
    with a bootstrap): the same figures with histories left out, and ``jack_weights`` their multiplicities,
    for the BCa acceleration.
    """

    tasks: tuple[str, ...]
    p: np.ndarray  # (K,)
    figures: dict[str, np.ndarray]
    method: str
    baseline: str
    temperature: float
    n: int
    ci_level: float
    jackknife: dict[str, np.ndarray] | None = None
    jack_weights: np.ndarray | None = None

    def point(self, name: str) -> np.ndarray:
        """The estimate of a figure: the full sample (exact) or the mean over repeats (Monte Carlo)."""
        v = self.figures[name]
        return v[0] if self.method == "exact" else v.mean(axis=0)

    def spread(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lo, hi, se)`` of a figure (NaN where there are no resamples)."""
        iv, se = self.interval(name)
        return iv.lo, iv.hi, se

    def interval(self, name: str) -> tuple[Interval, np.ndarray]:
        """The interval of a figure (exact: :func:`~measures.intervals.bootstrap_interval`, BCa or its
        fallback; Monte Carlo: Student-t over repeats) and its standard error; NaN without resamples."""
        v = self.figures[name]
        shape = v.shape[1:]
        if self.method == "exact":
            boot = v[1:]
            if len(boot) < 2:
                nan = np.full(shape, np.nan)
                return Interval(nan, nan, np.full(shape, "none", object), np.full(shape, "", object)), nan
            jack = None if self.jackknife is None else self.jackknife[name]
            bounds = FIGURE_BOUNDS.get(name, (-np.inf, np.inf))
            iv = bootstrap_interval(v[0], boot, jack, self.jack_weights, self.ci_level, bounds)
            return iv, boot.std(axis=0, ddof=1)
        se = v.std(axis=0, ddof=1) / np.sqrt(len(v))
        half = stats.t.ppf(1 - (1 - self.ci_level) / 2, df=len(v) - 1) * se
        mean = v.mean(axis=0)
        method = np.full(shape, "t", object)
        return Interval(mean - half, mean + half, method, np.full(shape, "", object)), se

    @property
    def n_resamples(self) -> int:
        return len(self.figures["op"]) - (1 if self.method == "exact" else 0)

    def result(self, k: int) -> MeasureResult:
        """The :class:`MeasureResult` of task ``k``."""

        def task_k(name: str, a: np.ndarray) -> np.ndarray:
            return np.asarray(a)[..., k] if name in _PER_TASK else np.asarray(a)

        point = {name: task_k(name, self.point(name)) for name in self.figures}
        ci: dict[str, tuple[float, float]] = NoIntervals()
        se: dict[str, float] = NoIntervals()
        ci_method: dict[str, str] = NoIntervals()
        unreliable = {}
        if self.n_resamples >= 2:
            ci, se, ci_method = {}, {}, {}
            for name in FIGURES:
                iv, s = self.interval(name)
                ci[name], se[name] = (
                    (float(task_k(name, iv.lo)), float(task_k(name, iv.hi))),
                    float(task_k(name, s)),
                )
                ci_method[name] = str(task_k(name, iv.method))
                if ci_method[name] == "jackknife":  # the category, without the numbers: repeats fold into one
                    unreliable[name] = str(task_k(name, iv.reason)).split(" (")[0]
        if unreliable:
            by_reason: dict[str, list[str]] = {}
            for name, why in unreliable.items():
                by_reason.setdefault(why, []).append(name)
            why = "; ".join(f"{', '.join(names)}: {text}" for text, names in by_reason.items())
            warnings.warn(
                f"BCa intervals cannot be trusted here ({why}): those use the estimate +- z * jackknife "
                "standard error instead (ci_method), and their coverage may be off; treat them as rough, or "
                "measure more histories",
                IntervalWarning,
                stacklevel=3,
            )
        return MeasureResult(
            op=float(point["op"]),
            imp=float(point["imp"]),
            imp_min=float(point["imp_min"]),
            op_theory=float(point["op_theory"]),
            excess_op=float(point["excess_op"]),
            excess_imp=float(point["excess_imp"]),
            success=float(point["success"]),
            baseline_success=float(point["baseline_success"]),
            p=float(self.p[k]),
            entropy=float(point["entropy"]),
            baseline_entropy=float(point["baseline_entropy"]),
            future=tuple(float(x) for x in point["future"]),
            baseline_future=tuple(float(x) for x in point["baseline_future"]),
            n=self.n,
            task=self.tasks[k],
            method=self.method,
            baseline=self.baseline,
            temperature=self.temperature,
            ci=ci,
            se=se,
            n_resamples=self.n_resamples,
            ci_level=self.ci_level,
            ci_method=ci_method,
        )


_PER_TASK = ("success", "baseline_success", "op_theory", "imp_min", "excess_op", "excess_imp")


def resolve_histories(histories: Any, n_histories: int | None, seed: int | None) -> np.ndarray:
    """Validate explicit histories ``(N, 20)`` (N >= 2), or draw ``n_histories`` natural ones with ``seed``.

    ``n_histories`` is not looked at when histories are given (:func:`check_n_histories` refuses both).
    """
    if histories is None:
        return natural_histories(check_int(n_histories, "n_histories", 2), seed)
    h = validate_histories(histories)
    if h.ndim != 2:
        raise ValueError(f"histories must have shape (N, {CONTEXT}), got {h.shape}")
    if len(h) < 2:
        raise ValueError(f"need at least 2 histories for a split-history measure, got {len(h)}")
    return h


def check_n_histories(h: np.ndarray, n_histories: Any) -> None:
    """With explicit histories ``h``, ``n_histories`` must be ``None`` or ``len(h)``: it is not ignored silently."""
    if n_histories is not None and n_histories != len(h):
        raise ValueError(
            f"n_histories={n_histories!r} but {len(h)} histories were given; pass one of histories= (measured "
            "as given) or n_histories= (drawn with seed=), not both"
        )


def check_tasks(tasks: Any) -> tuple[GoodSpec, ...]:
    """``tasks`` as a non-empty tuple of task ids or good sets (a single task id is not a tuple of tasks)."""
    if isinstance(tasks, str):
        raise ValueError(
            f"tasks must be a sequence of tasks, e.g. ({tasks!r},) or ('ngood2', 'ngood4'), got the string {tasks!r}"
        )
    try:
        out = tuple(tasks)
    except TypeError:
        raise TypeError(f"tasks must be a sequence of task ids or good sets, got {tasks!r}") from None
    if not out:
        raise ValueError(f"tasks must name at least one task, e.g. ('ngood4',), got {tasks!r}")
    return out


def child_rng(seed: int | None, stream: int) -> np.random.Generator:
    """An independent generator for one use of ``seed`` (1: bootstrap, 2: Monte Carlo sampling, 3: jackknife)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def measure_tasks(
    policy: Policy,
    tasks: tuple[GoodSpec, ...],
    *,
    histories: Any = None,
    n_histories: int | None = None,
    seed: int | None = 0,
    method: str = "exact",
    baseline: Any = "split",
    temperature: float = 0.0,
    token: int | None = None,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    n_repeats: int = 10,
    world: monte_carlo.World | None = None,
    estimator: str = "plugin",
) -> Evaluation:
    """Measure ``policy`` once for several tasks (Op and Imp do not depend on the task; success does).

    Arguments as :func:`measure`; returns the per-resample figures behind :class:`MeasureResult`.
    """
    if method not in MEASURE_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(MEASURE_METHODS)}")
    tasks = check_tasks(tasks)
    t = check_temperature(temperature)
    check_baseline(baseline, token)
    check_optional_seed(seed)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    n_bootstrap = check_int(
        n_bootstrap, "n_bootstrap", 0, expected="0 (no intervals) or an int >= 2 (resamples behind ci and se)"
    )
    if n_bootstrap == 1:
        raise ValueError(
            "n_bootstrap must be 0 (no intervals) or an int >= 2 (resamples behind ci and se), got 1"
        )
    if world is not None and method != "monte_carlo":
        raise ValueError(
            "world= is a black-box sampler for method='monte_carlo'; the exact method uses T itself"
        )
    names = tuple(task_name(task) for task in tasks)
    jack, jack_weights = None, None
    masks = np.stack([good_mask(task) for task in tasks]).astype(np.float64)
    p = masks.sum(axis=1) / N_OUT
    n_hist = N_HISTORIES[method] if n_histories is None else n_histories
    if method == "exact":
        h = resolve_histories(histories, n_hist, seed)
        if histories is not None:
            check_n_histories(h, n_histories)
        pi = action_probabilities(policy, h, t)
        rho = reference_probs(baseline, h, t, token)
        world_t = transition_probs(h)
        g = group_histories(pi, [world_t], rho) if n_bootstrap > 0 else None
        draws = estimate(pi, [world_t], rho, masks, n_bootstrap, child_rng(seed, 1), groups=g)
        figures = _figures_from(draws, p, world_index=0)
        if n_bootstrap >= 2:
            jd, jack_weights = jackknife(g, masks, child_rng(seed, 3))
            jack = _figures_from(jd, p, world_index=0)
        n = len(h)
    else:
        n_repeats = check_int(
            n_repeats, "n_repeats", 2, expected="an int >= 2 (the standard error needs repeats)"
        )
        fixed = None if histories is None else resolve_histories(histories, None, None)
        if fixed is not None:
            check_n_histories(fixed, n_histories)
        else:
            n_hist = check_int(n_hist, "n_histories", 2)
        reps = monte_carlo.run(
            lambda hh: (action_probabilities(policy, hh, t), reference_probs(baseline, hh, t, token)),
            masks,
            child_rng(seed, 2),
            n_histories=int(n_hist),
            n_repeats=n_repeats,
            histories=fixed,
            world=world,
            estimator=estimator,
        )
        figures = _figures_from(reps, p)
        n = len(fixed) if fixed is not None else int(n_hist)
    return Evaluation(
        tasks=names,
        p=p,
        figures=figures,
        method=method,
        baseline=baseline_name(baseline, token),
        temperature=t,
        n=n,
        ci_level=ci_level,
        jackknife=jack,
        jack_weights=jack_weights,
    )


def _figures_from(
    d: Draws | monte_carlo.RepeatEstimates, p: np.ndarray, world_index: int | None = None
) -> dict:
    def get(name: str) -> np.ndarray:
        v = getattr(d, name)
        return v[:, world_index] if world_index is not None else v

    s, s_prime = get("s"), get("s_prime")
    op, imp = get("op"), get("imp")
    theory = op_theory(np.clip(s, 0.0, 1.0), p[None])  # clip: float sums may exceed 1 by ~1e-16
    bound = imp_min(np.clip(s, 0.0, 1.0), np.clip(s_prime, 0.0, 1.0))
    return {
        "op": op,
        "imp": imp,
        "entropy": get("entropy"),
        "baseline_entropy": get("baseline_entropy"),
        "future": get("future"),
        "baseline_future": get("baseline_future"),
        "success": s,
        "baseline_success": s_prime,
        "op_theory": theory,
        "imp_min": bound,
        "excess_op": op[:, None] - theory,
        "excess_imp": imp[:, None] - bound,
    }


def measure(
    policy: Policy,
    task: GoodSpec = "ngood4",
    histories: Any = None,
    n_histories: int | None = None,
    seed: int | None = 0,
    method: str = "exact",
    baseline: Any = "split",
    temperature: float = 0.0,
    *,
    token: int | None = None,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
    n_repeats: int = 10,
    world: monte_carlo.World | None = None,
    estimator: str = "plugin",
) -> MeasureResult:
    """Split-history Op and Imp of ``policy`` on ``task`` (docs/spec.md §4), with Op_theory and Imp_min.

    :param policy: any policy: a callable on ``(N, 20)`` int64 histories returning actions ``(N,)`` or
        probabilities ``(N, 8)``; a torch module giving ``(N, 8)`` or next-token ``(N, 16)`` logits; a
        Stable-Baselines3 model or policy; an object with ``action_probs(histories, temperature)``; any of
        these in a :class:`~measures.policies.CachedPolicy`, which runs it once for several measures.
    :param task: ``"ngood2"``, ``"ngood4"``, ``"ngood6"`` or a custom good set (a proper subset of 0..7).
    :param histories: explicit ``(N, 20)`` natural histories (N >= 2). The exact method is then exact on
        them (no sampling); ``None`` draws ``n_histories`` with ``seed``.
    :param n_histories: histories to draw; default 4096 (exact) or 200 per repeat (Monte Carlo, the post).
    :param seed: seeds the histories (``natural_histories(n_histories, seed)``), the bootstrap and the
        Monte Carlo world samples (independent streams of one ``SeedSequence``).
    :param method: ``"exact"`` (O(N * 64)) or ``"monte_carlo"`` (the post's sampling algorithm, O(N^2)).
    :param baseline: ``"split"`` (default), ``"random"``, ``"fixed"`` (with ``token=``), ``"natural"`` or a
        reference policy object: see :mod:`measures.baselines`.
    :param temperature: 0 = greedy (the post's evaluation), ``> 0`` samples logits / temperature.
    :param token: the odd token 8..15 of ``baseline="fixed"``.
    :param n_bootstrap: bootstrap resamples over histories for ``ci``/``se`` (exact method; 0 for none).
    :param ci_level: coverage of the intervals.
    :param n_repeats: Monte Carlo repeats (the post: 10).
    :param world: Monte Carlo only: a black-box sampler ``world(histories, actions, rng) -> tokens``.
    :param estimator: Monte Carlo estimator from counts, ``"plugin"`` (the post) or ``"miller_madow"``
        (first-order bias corrections, see :mod:`measures.monte_carlo`).
    :return: a frozen :class:`MeasureResult`.
    """
    ev = measure_tasks(
        policy,
        (task,),
        histories=histories,
        n_histories=n_histories,
        seed=seed,
        method=method,
        baseline=baseline,
        temperature=temperature,
        token=token,
        n_bootstrap=n_bootstrap,
        ci_level=ci_level,
        n_repeats=n_repeats,
        world=world,
        estimator=estimator,
    )
    return ev.result(0)
