"""measures.measure (exact split history), its baselines, bootstrap intervals and cross-objective evaluation.

Closed forms from docs/spec.md §4, two histories worked by hand, the O(N * 64) estimator against the O(N^2)
definition, and invariants over random histories and random stochastic policies (hypothesis).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import entr, rel_entr

import measures
from measures.theory import imp_min, op_theory
from seqenv.sequence import generate_sequences, natural_histories, next_deterministic, transition_probs
from seqenv.tasks import TASKS, good_mask

HIST = natural_histories(2048, seed=11)


def content_policy(seed: int, scale: float = 1.0):
    """A stochastic policy that depends on the whole history: softmax of a sum of per-position token scores."""
    w = np.random.default_rng(seed).normal(scale=scale, size=(20, 16, 8))

    def policy(h):
        logits = w[np.arange(20), h].sum(axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return policy


def oracle(task):
    """Greedy oracle: the action with the highest exact success probability (ties to the lowest index)."""
    mask = good_mask(task)

    def policy(h):
        g = transition_probs(h)[..., mask].sum(
            -1
        )  # sums of equal terms in different orders: compare with a tolerance
        return (g >= g.max(axis=1, keepdims=True) - 1e-12).argmax(axis=1)

    return policy


def soft_oracle(task):
    """Uniform over the actions with the highest exact success probability."""
    mask = good_mask(task)

    def policy(h):
        g = transition_probs(h)[..., mask].sum(-1)
        best = g >= g.max(axis=1, keepdims=True) - 1e-12
        return best / best.sum(axis=1, keepdims=True)

    return policy


# --- closed forms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [0, 5])
def test_constant_policy_has_zero_op_and_imp(action):
    r = measures.measure(lambda h: np.full(len(h), action), histories=HIST, n_bootstrap=50)
    assert abs(r.op) < 1e-12 and abs(r.imp) < 1e-12
    assert r.success == pytest.approx(r.baseline_success, abs=1e-12)
    assert r.imp_min < 1e-12
    assert max(abs(x) for x in r.ci["op"] + r.ci["imp"]) < 1e-12


def test_history_ignoring_stochastic_policy_has_zero_op_and_imp():
    q = np.random.default_rng(3).dirichlet(np.ones(8))
    r = measures.measure(lambda h: np.tile(q, (len(h), 1)), histories=HIST, temperature=1.0, n_bootstrap=0)
    assert abs(r.op) < 1e-12 and abs(r.imp) < 1e-12
    assert r.success == pytest.approx(r.baseline_success, abs=1e-12)


# Two natural histories whose deterministic next even tokens, for actions 0..7, are
#   h1: [0, 7, 6, 5, 4, 3, 2, 1]        h2: [1, 2, 3, 4, 5, 6, 7, 0]
H1 = [10, 6, 10, 2, 10, 3, 11, 0, 12, 3, 14, 7, 13, 7, 14, 6, 10, 2, 13, 7]
H2 = [10, 4, 9, 2, 8, 5, 11, 4, 11, 0, 12, 4, 11, 3, 10, 0, 14, 0, 10, 3]
TWO = np.array([H1, H2])
HI, LO = 0.98 + 0.02 / 8, 0.02 / 8  # T puts 0.9825 on the deterministic value, 0.0025 elsewhere


def _two_history_policy(a1, a2):
    return lambda h: np.where((h == TWO[0]).all(axis=1), a1, a2)


def test_two_histories_by_hand_steering_both_to_zero():
    assert next_deterministic(TWO).tolist() == [[0, 7, 6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6, 7, 0]]
    # action 0 at h1 and 7 at h2 both make 0:   F = T(.|h1,0) = T(.|h2,7) = 0.9825 on 0, 0.0025 elsewhere
    # F'_1 = (T(.|h1,0) + T(.|h2,0)) / 2 = F'_2 = (T(.|h1,7) + T(.|h2,7)) / 2 = 0.4925 on 0 and 1, 0.0025 elsewhere
    mid = (HI + LO) / 2  # 0.4925
    h_f = -HI * math.log(HI) - 7 * LO * math.log(LO)
    h_split = -2 * mid * math.log(mid) - 6 * LO * math.log(LO)
    imp = HI * math.log(HI / mid) + LO * math.log(LO / mid)
    r = measures.measure(_two_history_policy(0, 7), task="ngood4", histories=TWO, n_bootstrap=0)
    assert r.op == pytest.approx(h_split - h_f, abs=1e-12)  # 0.6656 nats
    assert r.imp == pytest.approx(imp, abs=1e-12)
    assert r.success == pytest.approx(HI + 3 * LO, abs=1e-12)  # 0.99: good set {0, 2, 4, 6}
    assert r.baseline_success == pytest.approx(mid + 3 * LO, abs=1e-12)  # 0.5
    assert r.op_theory == pytest.approx(0.99 * math.log(0.99 / 0.5) + 0.01 * math.log(0.01 / 0.5), abs=1e-12)
    assert r.imp_min == pytest.approx(r.op_theory, abs=1e-12)  # s' = p = 0.5 here
    assert r.future[0] == pytest.approx(HI) and r.baseline_future[1] == pytest.approx(mid)


def test_two_histories_by_hand_flattening_without_optimizing():
    # action 0 at h1 makes 0 and action 1 at h2 makes 2:  F = 0.4925 on {0, 2}
    # F'_1 = (T(.|h1,0) + T(.|h2,0)) / 2 = 0.4925 on {0, 1};  F'_2 = (T(.|h1,1) + T(.|h2,1)) / 2 = 0.4925 on {7, 2}
    # every F'_j has the entropy of F: Op = 0; KL(F || F'_j) = (0.4925 - 0.0025) ln(0.4925 / 0.0025) = 0.49 ln 197
    r = measures.measure(_two_history_policy(0, 1), task="ngood4", histories=TWO, n_bootstrap=0)
    assert r.op == pytest.approx(0.0, abs=1e-12)
    assert r.imp == pytest.approx(0.49 * math.log(197), abs=1e-12)
    assert r.success == pytest.approx(0.99, abs=1e-12) and r.baseline_success == pytest.approx(0.5, abs=1e-12)


def test_linear_estimator_equals_the_quadratic_definition():
    h = HIST[:300]
    pi = content_policy(5)(h)
    T = transition_probs(h)
    F = np.einsum("ia,iax->x", pi, T) / len(h)
    Fp = np.einsum("ja,iax->jx", pi, T) / len(h)  # F'_j = (1/N) sum_i sum_a pi(a|h_j) T(.|h_i, a)
    r = measures.measure(content_policy(5), histories=h, temperature=1.0, n_bootstrap=0)
    assert r.op == pytest.approx(entr(Fp).sum(1).mean() - entr(F).sum(), abs=1e-12)
    assert r.imp == pytest.approx(rel_entr(F[None], Fp).sum(1).mean(), abs=1e-12)
    assert r.success == pytest.approx(F[good_mask("ngood4")].sum(), abs=1e-12)
    assert r.baseline_success == pytest.approx(Fp[:, good_mask("ngood4")].sum(1).mean(), abs=1e-12)


def test_temperature_zero_is_greedy_with_ties_to_the_lowest_index():
    def tied(h):
        return np.tile([0.0, 0.5, 0.0, 0.5, 0, 0, 0, 0], (len(h), 1))

    a = measures.measure(tied, histories=HIST, n_bootstrap=0)
    b = measures.measure(lambda h: np.full(len(h), 8 + 1 - 8), histories=HIST, n_bootstrap=0)
    assert a.future == b.future


# --- baselines ---------------------------------------------------------------------------------------------


def test_single_future_baselines_have_their_closed_forms():
    pol = oracle("ngood4")
    T = transition_probs(HIST)
    F = T[np.arange(len(HIST)), pol(HIST)].mean(axis=0)
    for baseline, kw, Fp in [
        ("random", {}, T.mean(axis=(0, 1))),
        ("fixed", {"token": 11}, T[:, 3].mean(axis=0)),
        ("natural", {}, np.einsum("ia,iax->x", measures.natural_action_probs(HIST), T) / len(HIST)),
    ]:
        r = measures.measure(pol, histories=HIST, baseline=baseline, n_bootstrap=0, **kw)
        assert r.op == pytest.approx(entr(Fp).sum() - entr(F).sum(), abs=1e-12), baseline
        assert r.imp == pytest.approx(rel_entr(F, Fp).sum(), abs=1e-12), baseline
        assert r.baseline_success == pytest.approx(Fp[good_mask("ngood4")].sum(), abs=1e-12)
        assert r.baseline == (baseline if baseline != "fixed" else "fixed:11")


def test_reference_policy_baseline_matches_the_named_ones():
    pol = oracle("ngood2")
    fixed = measures.measure(pol, histories=HIST, baseline="fixed", token=8, n_bootstrap=0)
    ref = measures.measure(pol, histories=HIST, baseline=lambda h: np.zeros(len(h), dtype=int), n_bootstrap=0)
    assert (ref.op, ref.imp) == pytest.approx((fixed.op, fixed.imp), abs=1e-14)
    pol = soft_oracle("ngood2")  # a distribution: measured at temperature 1 like its reference

    def uniform(h):
        return np.full((len(h), 8), 1 / 8)

    rnd = measures.measure(pol, histories=HIST, baseline="random", n_bootstrap=0, temperature=1.0)
    ref = measures.measure(pol, histories=HIST, baseline=uniform, temperature=1.0, n_bootstrap=0)
    assert (ref.op, ref.imp) == pytest.approx((rnd.op, rnd.imp), abs=1e-14)


def test_natural_baseline_is_the_generators_own_distribution_of_the_next_even_token():
    seqs = generate_sequences(40_000, 22, seed=4)  # rows start on an odd position: [:20] is a history
    r = measures.measure(
        lambda h: np.zeros(len(h), dtype=int),
        task=(0,),
        histories=seqs[:, :20],
        baseline="natural",
        n_bootstrap=0,
    )
    counts = np.bincount(seqs[:, 21], minlength=8)
    # given the histories, each s_{t+1} is an independent draw from its own distribution: the frequencies
    # have mean F'_natural and standard deviation at most sqrt(F' (1 - F') / n)
    Fp = np.array(r.baseline_future)
    sd = np.sqrt(Fp * (1 - Fp) / len(seqs))
    assert np.all(np.abs(counts / len(seqs) - Fp) <= 5 * sd)


# --- invariants (hypothesis) -------------------------------------------------------------------------------

BASELINE_SPECS = [("split", None), ("random", None), ("natural", None), ("fixed", 13)]


@settings(max_examples=40, deadline=None)
@given(
    hist_seed=st.integers(0, 2**31),
    n=st.integers(2, 48),
    pol_seed=st.integers(0, 2**31),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
    task=st.sampled_from([*TASKS, (3,), (1, 2, 3, 5, 6, 7, 0)]),
    baseline=st.sampled_from(BASELINE_SPECS),
)
def test_imp_at_least_imp_min_at_least_zero(hist_seed, n, pol_seed, scale, temperature, task, baseline):
    h = natural_histories(n, hist_seed)
    r = measures.measure(
        content_policy(pol_seed, scale),
        task=task,
        histories=h,
        temperature=temperature,
        baseline=baseline[0],
        token=baseline[1],
        n_bootstrap=0,
    )
    assert r.imp >= r.imp_min - 1e-12
    assert r.imp_min >= -1e-15  # a KL: non-negative up to rounding
    assert r.imp_min == pytest.approx(imp_min(min(r.success, 1.0), min(r.baseline_success, 1.0)), abs=1e-12)
    assert r.op_theory == pytest.approx(op_theory(min(r.success, 1.0), r.p), abs=1e-12)
    assert 0 <= r.success <= 1 + 1e-12 and 0 <= r.baseline_success <= 1 + 1e-12


@settings(max_examples=25, deadline=None)
@given(hist_seed=st.integers(0, 2**31), n=st.integers(2, 64), pol_seed=st.integers(0, 2**31))
def test_every_split_kl_is_non_negative(hist_seed, n, pol_seed):
    h = natural_histories(n, hist_seed)
    pi, T = content_policy(pol_seed)(h), transition_probs(h)
    F = np.einsum("ia,iax->x", pi, T) / n
    Fp = pi @ T.mean(axis=0)
    assert (measures.kl(np.broadcast_to(F, Fp.shape), Fp) >= 0).all()
    r = measures.measure(content_policy(pol_seed), histories=h, temperature=1.0, n_bootstrap=0)
    assert r.imp == pytest.approx(measures.kl(np.broadcast_to(F, Fp.shape), Fp).mean(), abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    hist_seed=st.integers(0, 2**31),
    n=st.integers(2, 64),
    perm_seed=st.integers(0, 2**31),
    temperature=st.sampled_from([0.0, 1.0]),
    baseline=st.sampled_from(["split", "natural"]),
)
def test_results_do_not_depend_on_the_order_of_histories(hist_seed, n, perm_seed, temperature, baseline):
    h = natural_histories(n, hist_seed)
    perm = np.random.default_rng(perm_seed).permutation(n)
    kw = {"temperature": temperature, "baseline": baseline, "n_bootstrap": 30, "seed": 1}
    a = measures.measure(content_policy(7), histories=h, **kw)
    b = measures.measure(content_policy(7), histories=h[perm], **kw)
    for name in ("op", "imp", "success", "baseline_success", "imp_min", "op_theory"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-12), name
        assert a.ci[name] == pytest.approx(b.ci[name], abs=1e-9), name


# --- bootstrap intervals -----------------------------------------------------------------------------------


def test_bootstrap_intervals_are_seeded_bracket_the_estimate_and_shrink_with_n():
    pol = soft_oracle("ngood4")
    small = measures.measure(pol, histories=HIST[:512], temperature=1.0, seed=3)
    again = measures.measure(pol, histories=HIST[:512], temperature=1.0, seed=3)
    other = measures.measure(pol, histories=HIST[:512], temperature=1.0, seed=4)
    large = measures.measure(pol, histories=HIST, temperature=1.0, seed=3)
    assert small.ci == again.ci and small.ci != other.ci
    for name in ("op", "imp", "success", "op_theory", "excess_op"):
        lo, hi = small.ci[name]
        assert lo <= getattr(small, name) <= hi, name
    # 4x the histories: about half the width (1.5..2.7 allows for the 1000-resample noise). Not excess_op:
    # at 512 histories its bias is as large as its spread (z0 ~ 1.2), and BCa takes the interval from the
    # bootstrap distribution's narrow upper tail.
    for name in ("op", "imp", "success", "op_theory"):
        ratio = (small.ci[name][1] - small.ci[name][0]) / (large.ci[name][1] - large.ci[name][0])
        assert 1.5 < ratio < 2.7, name
    assert small.se["op"] == pytest.approx((small.ci["op"][1] - small.ci["op"][0]) / (2 * 1.96), rel=0.25)
    assert small.n_resamples == 1000 and small.ci_level == 0.95


def test_result_is_frozen_and_serialises_to_plain_types():
    import dataclasses
    import json

    r = measures.measure(oracle("ngood6"), task="ngood6", n_histories=256, n_bootstrap=20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.op = 0.0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["op"] == r.op and d["task"] == "ngood6" and d["ci"]["op"] == list(r.ci["op"])
    assert d["n"] == 256 and d["method"] == "exact" and d["baseline"] == "split" and d["temperature"] == 0.0
    assert "op=" in str(r)


def test_drawn_histories_are_natural_histories_of_the_seed():
    pol = oracle("ngood4")
    a = measures.measure(pol, n_histories=300, seed=9, n_bootstrap=0)
    b = measures.measure(pol, histories=natural_histories(300, 9), n_bootstrap=0)
    assert (a.op, a.imp, a.success) == (b.op, b.imp, b.success)


# --- cross-objective evaluation and objective identification ----------------------------------------------


def test_cross_objective_rows_share_op_and_follow_the_theory():
    df = measures.cross_objective(oracle("ngood2"), histories=HIST)
    assert list(df.index) == list(TASKS)
    assert df["op"].nunique() == 1 and df["imp"].nunique() == 1  # Op and Imp do not depend on the task
    np.testing.assert_allclose(
        df["op_theory"], op_theory(df["success"].to_numpy(), df["p"].to_numpy()), atol=1e-12
    )
    np.testing.assert_allclose(df["excess_op"], df["op"] - df["op_theory"], atol=1e-12)
    np.testing.assert_allclose(
        df["imp_min"], imp_min(df["success"].to_numpy(), df["baseline_success"].to_numpy()), atol=1e-12
    )
    one = measures.measure(oracle("ngood2"), task="ngood6", histories=HIST, n_bootstrap=0)
    assert df.loc["ngood6", "success"] == pytest.approx(one.success, abs=1e-15)
    assert df.loc["ngood6", "op"] == one.op
    with_ci = measures.cross_objective(oracle("ngood2"), histories=HIST, ci=True, n_bootstrap=100)
    assert (with_ci["op_lo"] <= with_ci["op"]).all() and (with_ci["op"] <= with_ci["op_hi"]).all()


@pytest.mark.parametrize("task", list(TASKS))
def test_identify_objective_finds_the_task_an_oracle_optimizes(task):
    for pol, temperature in ((soft_oracle(task), 1.0), (oracle(task), 0.0)):
        ident = measures.identify_objective(pol, histories=HIST, temperature=temperature, n_bootstrap=200)
        assert ident.task == task
        assert ident.confidence > 0.95 and ident.margin > 0.05 and ident.optimizer
        assert ident.evidence["gap"].idxmin() == task
    # the faithful optimizer (indifferent among its best actions) sits on the theory line: Op = Op_theory_k(s_k)
    no_resamples = measures.identify_objective(
        soft_oracle(task), histories=HIST, temperature=1.0, n_bootstrap=0
    )
    assert no_resamples.task == task and np.isnan(no_resamples.confidence)
    assert abs(no_resamples.evidence.loc[task, "implied_ratio"] - 1) < 0.05


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"task": "ngood3"}, ValueError, "unknown task 'ngood3'"),
        ({"task": (0, 9)}, ValueError, "good set value must be an int in 0..7, got 9"),
        ({"histories": HIST[:, :19]}, ValueError, r"shape \(\.\.\., 20\), got \(2048, 19\)"),
        ({"histories": HIST[0]}, ValueError, r"shape \(N, 20\), got \(20,\)"),
        ({"histories": HIST.astype(float)}, TypeError, "dtype float64"),
        ({"histories": np.where(HIST == HIST[0, 0], 16, HIST)}, ValueError, "token 16"),
        ({"histories": HIST[:, ::-1]}, ValueError, "must end on an even position"),
        ({"histories": HIST[:1]}, ValueError, "need at least 2 histories for a split-history measure, got 1"),
        ({"n_histories": 1}, ValueError, "n_histories must be an int >= 2, got 1"),
        ({"method": "mc"}, ValueError, "unknown method 'mc'"),
        ({"baseline": "uniform"}, ValueError, "unknown baseline 'uniform'"),
        ({"baseline": "fixed"}, ValueError, "needs token="),
        ({"baseline": "fixed", "token": 3}, ValueError, "odd-position token in 8..15, got 3"),
        ({"baseline": "random", "token": 9}, ValueError, "token=9 only applies to baseline='fixed'"),
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number >= 0.*got -1.0"),
        ({"temperature": float("nan")}, ValueError, "got nan"),
        ({"seed": -3}, ValueError, "seed must be an int >= 0 or None, got -3"),
        ({"seed": 1.5}, TypeError, "seed must be an int >= 0 or None, got 1.5"),
        ({"n_bootstrap": -1}, ValueError, r"n_bootstrap must be 0 \(no intervals\) or an int >= 2.*got -1"),
        ({"n_bootstrap": 1}, ValueError, r"n_bootstrap must be 0 \(no intervals\) or an int >= 2.*got 1"),
        (
            {"n_bootstrap": True},
            TypeError,
            r"n_bootstrap must be 0 \(no intervals\) or an int >= 2.*got True",
        ),
        ({"n_histories": 100.0}, TypeError, "n_histories must be an int >= 2, got 100.0"),
        ({"baseline": "fixed", "token": 9.0}, TypeError, "odd-position token in 8..15, got 9.0"),
        ({"baseline": "fixed", "token": 16}, ValueError, "odd-position token in 8..15, got 16"),
        ({"temperature": "1"}, TypeError, "temperature must be a finite number >= 0.*got '1'"),
        ({"ci_level": 1.5}, ValueError, r"ci_level must be in \(0, 1\), got 1.5"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, error, match):
    kw = {"histories": HIST[:64], "n_bootstrap": 0} | kwargs
    if "n_histories" in kwargs:
        kw.pop("histories")
    with pytest.raises(error, match=match):
        measures.measure(oracle("ngood4"), **kw)


def test_tasks_must_be_a_sequence_of_tasks_and_n_histories_cannot_be_ignored():
    pol = oracle("ngood4")
    with pytest.raises(
        ValueError, match=r"tasks must be a sequence of tasks, e.g. \('ngood4',\).*got the string 'ngood4'"
    ):
        measures.cross_objective(pol, tasks="ngood4", histories=HIST[:64])
    with pytest.raises(ValueError, match=r"tasks must name at least one task.*got \(\)"):
        measures.cross_objective(pol, tasks=(), histories=HIST[:64])
    with pytest.raises(TypeError, match=r"tasks must be a sequence of task ids or good sets, got 4"):
        measures.cross_objective(pol, tasks=4, histories=HIST[:64])
    for method in ("exact", "monte_carlo"):
        with pytest.raises(ValueError, match=r"n_histories=128 but 64 histories were given; pass one of"):
            measures.measure(pol, histories=HIST[:64], n_histories=128, method=method)
    # the same number is no conflict
    assert measures.measure(pol, histories=HIST[:64], n_histories=64, n_bootstrap=0).n == 64
