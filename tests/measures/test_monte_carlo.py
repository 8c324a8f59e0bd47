"""method="monte_carlo": the post's sampling estimator agrees with the exact one within its own standard error."""

import numpy as np
import pytest
from scipy.special import entr

import measures
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import good_mask


def oracle(h):  # greedy on the exact success probability, ties to the lowest action
    g = transition_probs(h)[..., good_mask("ngood4")].sum(-1)
    return (g >= g.max(axis=1, keepdims=True) - 1e-12).argmax(axis=1)


def natural_greedy(h):
    return measures.natural_action_probs(h).argmax(axis=1)


def mixed(h):  # stochastic and history-dependent
    return 0.5 * measures.natural_action_probs(h) + 0.5 / 8


CASES = [("oracle", oracle, 0.0), ("natural", natural_greedy, 0.0), ("mixed", mixed, 1.0)]


@pytest.fixture(scope="module")
def exact():
    h = natural_histories(50_000, seed=5)  # the population value to well below the Monte Carlo error
    return {
        (name, baseline): measures.measure(pol, histories=h, temperature=t, baseline=baseline, n_bootstrap=0)
        for name, pol, t in CASES
        for baseline in ("split", "random")
    }


@pytest.mark.parametrize("baseline", ["split", "random"])
@pytest.mark.parametrize("name, policy, temperature", CASES)
def test_monte_carlo_agrees_with_exact_within_four_standard_errors(
    exact, name, policy, temperature, baseline
):
    ex = exact[(name, baseline)]
    mc = measures.measure(policy, method="monte_carlo", seed=2, temperature=temperature, baseline=baseline)
    assert (mc.n, mc.n_resamples) == (200, 10)  # the post's 200 histories x 10 repeats
    # Op with the post's plug-in entropies (their biases cancel to first order), success rates
    for fig in ("op", "success", "baseline_success"):
        assert abs(getattr(mc, fig) - getattr(ex, fig)) <= 4 * mc.se[fig], fig
    # Imp: the plug-in KL is biased up by ~0.03 nats at n = 200; the first-order correction removes it
    mm = measures.measure(
        policy,
        method="monte_carlo",
        seed=2,
        temperature=temperature,
        baseline=baseline,
        estimator="miller_madow",
    )
    assert abs(mm.imp - ex.imp) <= 4 * mm.se["imp"]
    assert mc.imp > mm.imp


def test_monte_carlo_interval_is_a_t_interval_over_repeats_and_seeded():
    a = measures.measure(oracle, method="monte_carlo", seed=8, n_histories=100, n_repeats=5)
    b = measures.measure(oracle, method="monte_carlo", seed=8, n_histories=100, n_repeats=5)
    c = measures.measure(oracle, method="monte_carlo", seed=9, n_histories=100, n_repeats=5)
    assert a == b and a.op != c.op
    lo, hi = a.ci["op"]
    assert (lo + hi) / 2 == pytest.approx(a.op, abs=1e-12)
    assert (hi - lo) / 2 == pytest.approx(2.7764451 * a.se["op"], rel=1e-6)  # t(0.975, 4 dof)


def test_black_box_world_is_sampled_through_the_given_function():
    # a world that writes back the action: F is the distribution of actions, every F'_j a point mass
    h = natural_histories(64, seed=1)
    calls = []

    def echo(histories, actions, rng):
        calls.append(len(actions))
        return actions.copy()

    r = measures.measure(natural_greedy, method="monte_carlo", histories=h, world=echo, n_repeats=2)
    counts = np.bincount(natural_greedy(h), minlength=8)
    assert r.op == pytest.approx(-entr(counts / 64).sum(), abs=1e-12)  # 0 - H(F)
    assert sum(calls) == 2 * (64 + 64 * 64)  # n + n^2 world samples per repeat


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_repeats": 1}, "n_repeats must be an int >= 2"),
        ({"estimator": "jackknife"}, "unknown estimator 'jackknife'"),
        ({"n_histories": 1}, "n_histories must be an int >= 2, got 1"),
        ({"world": lambda h, a, rng: np.full(len(a), 9)}, "world returned token 9; expected 0..7"),
        ({"world": lambda h, a, rng: np.zeros(3, dtype=int)}, r"shape \(3,\); expected \(200,\)"),
    ],
)
def test_bad_monte_carlo_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measures.measure(oracle, method="monte_carlo", **kwargs)


def test_world_sampler_is_only_for_monte_carlo():
    with pytest.raises(ValueError, match="world= is a black-box sampler for method='monte_carlo'"):
        measures.measure(oracle, world=lambda h, a, rng: a, n_histories=10)
