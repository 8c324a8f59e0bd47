"""BCa bootstrap intervals (measures.intervals) and the jackknife behind their acceleration (measures.split).

Closed forms (the percentile interval as the unbiased, unskewed case; a shifted normal bootstrap; the
acceleration of a mean), the jackknife against brute-force leave-one-out, and the property a user relies
on: 95% intervals cover the population value about 95% of the time.
"""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtri

import measures
from measures.api import FIGURES, IntervalWarning, measure_tasks
from measures.intervals import acceleration, bca_interval, bootstrap_interval, jackknife_se
from measures.split import group_histories, jackknife
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import TASKS, good_mask
from tests.measures.test_split import content_policy, oracle, soft_oracle  # the same test policies

# --- closed forms ------------------------------------------------------------------------------------------


def test_without_bias_or_skew_bca_is_the_percentile_interval():
    x = np.random.default_rng(0).normal(size=999)
    boot = np.concatenate([x, -x, [0.0]])  # symmetric about the estimate 0: z0 = 0
    jack = np.array([-2.0, -1.0, 1.0, 2.0])  # symmetric jackknife: a = 0
    assert acceleration(jack) == 0.0
    for level in (0.9, 0.95):
        lo, hi = bca_interval(0.0, boot, jack, level=level)
        want = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
        assert (lo, hi) == pytest.approx(tuple(want), abs=1e-12)


def test_bias_correction_recentres_a_shifted_normal_bootstrap():
    # replicates ~ N(est + d, sigma^2) (an exact normal grid): BC takes the percentiles Phi(2 z0 +- 1.96) with
    # z0 = -d / sigma, i.e. est - d +- 1.96 sigma: the interval moves against the bootstrap's bias
    est, d, sigma, b = 1.0, 0.3, 0.5, 200_000
    boot = est + d + sigma * ndtri((np.arange(b) + 0.5) / b)
    lo, hi = bca_interval(est, boot)
    assert lo == pytest.approx(est - d - 1.959964 * sigma, abs=1.5e-3)
    assert hi == pytest.approx(est - d + 1.959964 * sigma, abs=1.5e-3)


def test_acceleration_of_a_mean_is_its_skewness_over_6_sqrt_n():
    x = np.random.default_rng(1).exponential(size=400)
    n = len(x)
    jack = (x.sum() - x) / (n - 1)  # the mean with each observation left out
    assert acceleration(jack) == pytest.approx(stats.skew(x) / (6 * np.sqrt(n)), rel=1e-9)
    # multiplicities: repeated values given once with their count give the same acceleration
    values, counts = np.unique(np.round(x[:50], 1), return_counts=True)
    expanded = np.repeat(values, counts)
    assert acceleration(values, counts) == pytest.approx(acceleration(expanded), rel=1e-12)


def test_intervals_are_elementwise_and_handle_ties_and_nan():
    rng = np.random.default_rng(2)
    boot = rng.normal(size=(500, 3))
    est = np.array([0.1, np.nan, -0.2])
    lo, hi = bca_interval(est, boot)
    for k in (0, 2):
        one = bca_interval(est[k], boot[:, k])
        assert (lo[k], hi[k]) == pytest.approx(one, abs=1e-12)
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    # a discrete figure (every replicate equal to the estimate): the interval is that value
    assert bca_interval(0.5, np.full(100, 0.5)) == (0.5, 0.5)
    # an estimate below every replicate still gives a finite interval within the replicates
    lo, hi = bca_interval(-10.0, boot[:, 0])
    assert boot[:, 0].min() <= lo <= hi <= boot[:, 0].max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimate": 0.0, "boot": np.zeros(1)}, "B >= 2"),
        ({"estimate": np.zeros(2), "boot": np.zeros((10, 3))}, "match the estimate"),
        ({"estimate": 0.0, "boot": np.zeros(10), "level": 1.0}, "level must be in"),
        ({"estimate": 0.0, "boot": np.zeros(10), "jack": np.zeros((4, 2))}, "jack must have shape"),
        (
            {"estimate": 0.0, "boot": np.zeros(10), "jack": np.zeros(4), "jack_weights": [1, 2]},
            "weights must",
        ),
    ],
)
def test_bad_input_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bca_interval(**kwargs)


# --- the jackknife -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_jackknife_is_leave_one_out_with_multiplicities(temperature):
    h = natural_histories(40, seed=5)
    policy = soft_oracle("ngood4") if temperature else (lambda x: soft_oracle("ngood4")(x).argmax(axis=1))
    ev = measure_tasks(policy, ("ngood4",), histories=h, temperature=temperature, n_bootstrap=2)
    jack = np.repeat(ev.jackknife["op"], ev.jack_weights.astype(int))
    brute = [
        measures.measure(policy, histories=np.delete(h, i, axis=0), temperature=temperature, n_bootstrap=0).op
        for i in range(len(h))
    ]
    assert len(jack) == len(h)
    np.testing.assert_allclose(np.sort(jack), np.sort(brute), atol=1e-12)


def test_block_jackknife_leaves_out_a_partition_of_the_histories():
    # 512 histories with distinct action distributions in 256 blocks of 2: for the success rate (a mean)
    # the left-out values satisfy sum_b s_(b) = (m - 1) n s / (n - 2) exactly when the blocks partition them
    n, m = 512, 256
    h = natural_histories(n, seed=6)
    pi = content_policy(3)(h)
    mask = good_mask("ngood4")[None].astype(float)
    g = group_histories(pi, [transition_probs(h)])
    draws, weights = jackknife(g, mask, np.random.default_rng(0), max_rows=m)
    s = measures.measure(content_policy(3), histories=h, temperature=1.0, n_bootstrap=0).success
    assert draws.s.shape == (m, 1, 1) and np.all(weights == 1)
    assert draws.s[:, 0, 0].sum() == pytest.approx((m - 1) * n * s / (n - 2), rel=1e-12)


# --- what a user relies on -----------------------------------------------------------------------------------


def test_95_percent_intervals_cover_the_population_value():
    # population values from 2^20 histories; 300 independent samples of 2,048 histories, 500 resamples each.
    # Coverage 0.95 has a standard error of 0.0126 over 300 samples: Op, Imp and success are covered within
    # 4 s.e. of 95%. The differences excess_op and excess_imp are biased at this N by a good part of their
    # spread; BCa covers them far more often than the percentile interval (measured over 600 samples:
    # 0.92 vs 0.80 and 0.87 vs 0.72), though still below 95%.
    policy = soft_oracle("ngood4")
    big = measure_tasks(
        policy, ("ngood4",), histories=natural_histories(1 << 20, 99), temperature=1.0, n_bootstrap=0
    )
    names = ("op", "imp", "success", "excess_op", "excess_imp")
    truth = {k: big.point(k).ravel()[0] for k in names}
    bca, pct = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    reps = 300
    for r in range(reps):
        h = natural_histories(2048, seed=1000 + r)
        ev = measure_tasks(policy, ("ngood4",), histories=h, temperature=1.0, n_bootstrap=500, seed=r)
        for k in names:
            lo, hi = (x.ravel()[0] for x in ev.spread(k)[:2])
            bca[k] += lo <= truth[k] <= hi
            lo, hi = np.percentile(ev.figures[k].reshape(501, -1)[1:, 0], [2.5, 97.5])
            pct[k] += lo <= truth[k] <= hi
    floor = 0.95 - 4 * np.sqrt(0.95 * 0.05 / reps)
    coverage = {k: (bca[k] / reps, pct[k] / reps) for k in names}
    assert all(bca[k] / reps >= floor for k in ("op", "imp", "success")), coverage
    # paired difference of two coverages over the same samples: expected 0.12-0.15, s.e. ~0.02 (from the
    # ~13% of samples where exactly one interval covers), so 0.05 is over 3 s.e. below
    assert all(bca[k] - pct[k] >= 0.05 * reps for k in ("excess_op", "excess_imp")), coverage


# --- small N: honest intervals (issue 17) ----------------------------------------------------------------------


def test_jackknife_se_of_a_mean_is_the_standard_error():
    x = np.random.default_rng(3).exponential(size=50)
    n = len(x)
    jack = (x.sum() - x) / (n - 1)
    assert jackknife_se(jack) == pytest.approx(x.std(ddof=1) / np.sqrt(n), rel=1e-12)
    values, counts = np.unique(np.round(x, 1), return_counts=True)  # grouped rows with multiplicities
    jack = (np.round(x, 1).sum() - values) / (n - 1)
    expanded = (np.round(x, 1).sum() - np.round(x, 1)) / (n - 1)
    assert jackknife_se(jack, counts) == pytest.approx(jackknife_se(expanded), rel=1e-12)


def test_the_issue_example_falls_back_says_so_and_warns():
    # 64 histories of a history-ignoring-ish policy: ~99% of the resamples of the plug-in Imp lie above the
    # estimate (z0 ~ -2.5); BCa gave [0.0645, 0.0665] with se 0.058, and [0.0801, 0.0801] at seed 1
    h = natural_histories(64, seed=0)
    for seed, b in ((0, 1000), (1, 200)):
        with pytest.warns(IntervalWarning, match=r"imp.*extreme bias correction"):
            r = measures.measure(lambda x: x[:, -1] % 8, histories=h, seed=seed, n_bootstrap=b)
        lo, hi = r.ci["imp"]
        assert r.ci_method["imp"] == "jackknife" and lo <= r.imp <= hi
        assert hi - lo >= 2 * 1.9 * r.se["imp"] * 0.5  # as wide as its standard error allows (clipped at 0)
        assert lo == 0.0  # a KL: the normal interval stops at the bound
        assert r.ci_method["op"] == "bca" and r.to_dict()["ci_method"] == r.ci_method


def test_large_samples_keep_bca():
    # (the excess figures of this faithful policy sit at ~0 and fall back at this N, rightly: see the coverage
    # test below)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IntervalWarning)
        r = measures.measure(oracle("ngood4"), n_histories=2048, n_bootstrap=500)
    assert set(r.ci_method.values()) == {"bca"} and not caught
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntervalWarning)
        r = measures.measure(soft_oracle("ngood4"), n_histories=2048, temperature=1.0, n_bootstrap=500)
    assert {r.ci_method[k] for k in ("op", "imp", "success")} == {"bca"}


def test_bootstrap_interval_methods_per_element():
    rng = np.random.default_rng(4)
    good = rng.normal(size=(1000, 1))
    lattice = np.repeat([[0.0], [1.0]], 500, axis=0)  # two values only: a lattice, not a distribution
    boot = np.concatenate([good, lattice], axis=1)
    est = np.array([0.0, 0.5, np.nan])[:2]
    iv = bootstrap_interval(est, boot)
    assert (
        list(iv.method) == ["bca", "jackknife"]
        and iv.reason[0] == ""
        and "distinct resample values" in iv.reason[1]
    )
    # without a jackknife the fallback uses the bootstrap's standard deviation, within the bounds
    iv = bootstrap_interval(0.5, lattice[:, 0], bounds=(0.0, 1.0))
    assert (iv.lo, iv.hi) == pytest.approx((0.0, 1.0))
    nan = bootstrap_interval(np.nan, good[:, 0])
    assert np.isnan(nan.lo) and nan.method == "none"
    # too few resamples for the tails of a 95% interval: the fallback, and the reason names the count
    iv = bootstrap_interval(0.0, good[:20, 0])
    assert iv.method == "jackknife" and iv.reason.startswith("too few resamples (20 ")


def test_an_end_near_a_bound_reaches_it():
    boot = np.random.default_rng(5).normal(size=2000) ** 2 + 1e-9  # a KL-like figure piled up at 0
    est = float(np.median(boot))
    iv = bootstrap_interval(est, boot, bounds=(0.0, np.inf))
    assert iv.lo == 0.0 and iv.method == "bca"


def test_n_bootstrap_one_is_refused_and_zero_says_why_there_is_no_interval():
    with pytest.raises(ValueError, match=r"n_bootstrap must be 0 \(no intervals\) or an int >= 2.*got 1"):
        measures.measure(lambda h: h[:, 0] % 8, n_histories=64, n_bootstrap=1)
    r = measures.measure(lambda h: h[:, 0] % 8, n_histories=64, n_bootstrap=0)
    assert r.ci == {} and r.ci_method == {}
    with pytest.raises(KeyError, match="n_bootstrap=0; pass n_bootstrap >= 2"):
        r.ci["op"]


def random_case(rng: np.random.Generator) -> dict:
    """A random small-N measurement: 2..256 histories, one of six policy families, 2..1000 resamples."""
    n = int(rng.choice([2, 3, 4, 5, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]))
    kind, k, m = int(rng.integers(6)), int(rng.integers(20)), int(rng.integers(1, 9))
    table = rng.integers(0, 8, size=16)
    temperature = float(rng.choice([0.0, 1.0]))
    policies = [
        lambda h: (h[:, k] * m) % 8,  # a function of one token
        content_policy(int(rng.integers(1 << 30)), float(rng.choice([0.3, 1.0, 3.0]))),
        soft_oracle(str(rng.choice(list(TASKS)))),
        oracle(str(rng.choice(list(TASKS)))),
        lambda h: table[h[:, k]],  # a lookup table of one token
        lambda h: np.full(len(h), m % 8),  # constant
    ]
    return {
        "policy": policies[kind],
        "histories": natural_histories(n, int(rng.integers(1 << 30))),
        "temperature": temperature if kind in (1, 2) else 0.0,
        "n_bootstrap": int(rng.choice([2, 5, 20, 100, 200, 1000])),
        "baseline": str(rng.choice(["split", "split", "random", "natural"])),
        "seed": int(rng.integers(1 << 30)),
    }


def excluding(n_cases: int, seed: int) -> dict[str, int]:
    """Per figure, how many of ``n_cases`` random small-N cases give an interval that misses the estimate."""
    rng = np.random.default_rng(seed)
    missed = dict.fromkeys(FIGURES, 0)
    for _ in range(n_cases):
        c = random_case(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntervalWarning)
            ev = measure_tasks(c.pop("policy"), tuple(TASKS), **c)
        for name in FIGURES:
            lo, hi, _ = ev.spread(name)
            est = ev.point(name)
            slack = 1e-12 * (1 + np.abs(est))
            missed[name] += bool(np.any((est < lo - slack) | (est > hi + slack)))
    return missed


def test_no_interval_misses_its_estimate_at_small_n():
    # before issue 17, 13-28% of such cases missed per figure (10,000 cases), means (success) included
    assert excluding(300, seed=17) == dict.fromkeys(FIGURES, 0)


@pytest.mark.slow
def test_no_interval_misses_its_estimate_in_10000_random_small_n_cases():
    assert excluding(10_000, seed=2017) == dict.fromkeys(FIGURES, 0)


@pytest.mark.parametrize("n, reps", [(64, 400), (256, 200)])
def test_coverage_at_small_n_is_nominal_or_reported_unreliable(n, reps):
    # The test policy of the 2,048-history test; population values from 2^20 histories. An interval "misses
    # silently" when it does not cover the population value and is BCa (not flagged as the jackknife
    # fallback, which warns). Silent misses must stay at the nominal 5% (within 3 binomial s.e. of `reps`),
    # and Op and Imp, whose intervals are BCa here, must cover within 0.05 of 95% (3 s.e. of slack).
    # Measured (issue 17, 1,000 resamples, 400 / 300 samples): N=64 coverage op 0.94, imp 0.95, success 0.82
    # (the 16% of samples that hold none of the rare low-success histories; nearly all flagged, the BCa ones
    # cover 0.96), excess_op 0.94, excess_imp 0.87 (all flagged); N=256: 0.95, 0.94, 0.96, 0.91, 0.90.
    policy = soft_oracle("ngood4")
    big = measure_tasks(
        policy, ("ngood4",), histories=natural_histories(1 << 20, 99), temperature=1.0, n_bootstrap=0
    )
    names = ("op", "imp", "success", "excess_op", "excess_imp")
    truth = {k: big.point(k).ravel()[0] for k in names}
    covered, silent = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for r in range(reps):
        h = natural_histories(n, seed=1000 + r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntervalWarning)
            ev = measure_tasks(policy, ("ngood4",), histories=h, temperature=1.0, n_bootstrap=500, seed=r)
        for k in names:
            iv, _ = ev.interval(k)
            hit = float(np.ravel(iv.lo)[0]) <= truth[k] <= float(np.ravel(iv.hi)[0])
            covered[k] += hit
            silent[k] += not hit and np.ravel(iv.method)[0] == "bca"
    tol = 3 * np.sqrt(0.95 * 0.05 / reps)
    report = {k: (covered[k] / reps, silent[k] / reps) for k in names}
    assert all(silent[k] / reps <= 0.05 + tol for k in names), report
    assert all(covered[k] / reps >= 0.90 - tol for k in ("op", "imp")), report
