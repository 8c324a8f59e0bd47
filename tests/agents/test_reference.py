"""Reference policies: exact uniform and natural distributions, and the oracle as the exact ceiling."""

import numpy as np
import pytest

import agents
import measures
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from seqenv.sequence import generate_sequences, natural_histories
from seqenv.tasks import TASKS, good_mask
from tests.conftest import Z, within

H = natural_histories(4096, seed=11)


def spec_next(window) -> int:
    """docs/spec.md §1 by hand: ((prod (s + 1)) mod 17) mod 8 over the 16 tokens before the next position."""
    prod = 1
    for s in window:
        prod = prod * (int(s) + 1) % 17
    return prod % 8


def spec_success(history, action: int, task: str) -> float:
    """P(good | h, a) by hand: 0.98 on the deterministic value after h + (8 + a), 0.02/8 on every value."""
    d = spec_next(list(history[-15:]) + [8 + action])
    good = good_mask(task)
    return 0.98 * good[d] + 0.02 * good.sum() / 8


def test_uniform_is_exactly_one_eighth_at_every_temperature():
    pol = UniformPolicy()
    for t in (0.0, 0.5, 1.0, 3.0):
        assert np.array_equal(pol.action_probs(H, temperature=t), np.full((len(H), 8), 0.125))


def test_natural_is_the_generators_exact_law_of_the_odd_token():
    probs = NaturalPolicy().action_probs(H[:300])
    for h, p in zip(H[:300], probs):
        d = spec_next(h[-16:])
        expected = np.full(8, 0.02 / 8)
        expected[d] += 0.98
        assert np.allclose(p, expected, atol=1e-15)
    # the same convention as the measures' "natural" comparison future
    assert np.allclose(NaturalPolicy().action_probs(H), measures.baselines.natural_action_probs(H), atol=0)


def test_natural_matches_the_frequency_of_the_actual_next_odd_token():
    """On generated sequences, the natural policy's most probable token is the one written 98.25% of the time."""
    seqs = generate_sequences(20_000, 21, seed=5)  # row [:20] is a history, [20] its next (odd) token
    hist, nxt = seqs[:, :20], seqs[:, 20] - 8
    mode = NaturalPolicy().action_probs(hist).argmax(axis=1)
    rate = np.mean(mode == nxt)
    assert within(rate, 0.9825, len(hist))


@pytest.mark.parametrize("task", list(TASKS))
def test_oracle_success_is_the_exact_maximum_and_beats_every_other_policy(task):
    oracle = OraclePolicy(task)
    p_good = np.array([[spec_success(h, a, task) for a in range(8)] for h in H[:400]])
    assert np.allclose(oracle.success_probs(H[:400]), p_good, atol=1e-12)
    s_max = p_good.max(axis=1).mean()
    for pol in (oracle, OraclePolicy(task, tie_break="lowest"), OraclePolicy(task, seed=7)):
        assert (pol.action_probs(H[:400]) * p_good).sum(axis=1).mean() == pytest.approx(s_max, abs=1e-12)
    rng = np.random.default_rng(0)
    others = [UniformPolicy().action_probs(H[:400]), NaturalPolicy().action_probs(H[:400])]
    others += [np.eye(8)[rng.integers(0, 8, 400)] for _ in range(20)]  # arbitrary deterministic policies
    for probs in others:
        assert (probs * p_good).sum(axis=1).mean() <= s_max + 1e-12
    # the measures see the same ceiling
    assert measures.measure(oracle, task, histories=H, n_bootstrap=0).success == pytest.approx(
        oracle.success_probs(H).max(axis=1).mean(), abs=1e-12
    )


def test_oracle_tie_breaks():
    task = "ngood4"
    p = OraclePolicy(task).success_probs(H)
    best = np.isclose(p, p.max(axis=1, keepdims=True))
    ties = best.sum(axis=1) > 1
    assert ties.mean() > 0.3  # ngood4 has many histories with several good tokens
    lowest = OraclePolicy(task, tie_break="lowest").action_probs(H).argmax(axis=1)
    assert np.array_equal(lowest, best.argmax(axis=1))
    random0 = OraclePolicy(task, seed=0).action_probs(H).argmax(axis=1)
    random1 = OraclePolicy(task, seed=1).action_probs(H).argmax(axis=1)
    assert best[np.arange(len(H)), random0].all() and best[np.arange(len(H)), random1].all()
    assert np.array_equal(random0[~ties], lowest[~ties])
    # among k tied actions the random choice is the lowest one 1/k of the time, and depends on the seed
    k = best.sum(axis=1)[ties]
    expected = np.mean(1 - 1 / k)
    assert abs(np.mean(random0[ties] != lowest[ties]) - expected) <= Z * np.sqrt(0.25 / ties.sum())
    assert np.mean(random0[ties] != random1[ties]) > 0.5
    # a policy: a function of the history, whatever batch it comes in
    perm = np.random.default_rng(1).permutation(len(H))
    assert np.array_equal(OraclePolicy(task, seed=0).action_probs(H[perm]).argmax(axis=1), random0[perm])
    assert np.array_equal(OraclePolicy(task, seed=0).action_probs(H[:7]).argmax(axis=1), random0[:7])


@pytest.mark.parametrize("k", [3, 4, 5])
def test_random_ties_are_uniform_among_the_tied_actions(k):
    """Among k tied actions each is picked 1/k of the time: the hash favours no action (chi-square, p ~ 1e-3)."""
    p = OraclePolicy("ngood4").success_probs(H)
    best = np.isclose(p, p.max(axis=1, keepdims=True))
    rows = best.sum(axis=1) == k
    picks = OraclePolicy("ngood4", seed=3).action_probs(H[rows]).argmax(axis=1)
    rank = best[rows].cumsum(axis=1)[np.arange(rows.sum()), picks] - 1  # 0..k-1 among the tied actions
    counts = np.bincount(rank, minlength=k)
    expected = rows.sum() / k
    assert rows.sum() > 300
    assert ((counts - expected) ** 2 / expected).sum() < {3: 13.8, 4: 16.3, 5: 18.5}[k]


def test_predict_follows_sb3_conventions():
    oracle = OraclePolicy("ngood2")
    a, state = oracle.predict(H[0])
    assert state is None and a.shape == () and a == oracle.action_probs(H[:1]).argmax()
    acts, _ = oracle.predict(H[:10], deterministic=False)
    assert np.array_equal(acts, oracle.action_probs(H[:10]).argmax(axis=1))
    nat, _ = NaturalPolicy().predict(H[:10])
    assert np.array_equal(nat, NaturalPolicy().action_probs(H[:10]).argmax(axis=1))
    # the uniform policy has no mode: it always samples, uniformly (chi-square, 7 dof, p ~ 1e-4)
    acts, _ = UniformPolicy(seed=0).predict(np.repeat(H[:1], 8000, axis=0))
    counts = np.bincount(acts, minlength=8)
    assert ((counts - 1000) ** 2 / 1000).sum() < 29.9
    nat_sampled, _ = NaturalPolicy(seed=0).predict(np.repeat(H[:1], 8000, axis=0), deterministic=False)
    d = spec_next(H[0][-16:])
    share = np.mean(nat_sampled == d)
    assert within(share, 0.9825, 8000)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="tie_break"):
        OraclePolicy("ngood4", tie_break="first")
    with pytest.raises(ValueError, match="unknown task"):
        OraclePolicy("ngood5")
    with pytest.raises(ValueError, match="seed"):
        OraclePolicy("ngood4", seed=-1)
    with pytest.raises(ValueError, match="temperature"):
        UniformPolicy().action_probs(H[:2], temperature=-1.0)
    bad = H[:2].copy()
    bad[:, -1] = 9  # an odd token where an even one belongs
    with pytest.raises(ValueError, match="column 19"):
        NaturalPolicy().action_probs(bad)
    with pytest.raises(ValueError, match=r"\(\.\.\., 20\)"):
        OraclePolicy().action_probs(H[:, :19])


def test_reference_policies_follow_the_shared_protocol():
    assert agents.reference.OraclePolicy is OraclePolicy  # reachable after a bare `import agents`
    for pol in (UniformPolicy(), NaturalPolicy(), OraclePolicy()):
        assert isinstance(pol, agents.Policy) and isinstance(pol, agents.PolicyBase)
    # sampling uses the policy's own generator: the same seed gives the same actions, whatever torch's state
    a = NaturalPolicy(seed=4).predict(H, deterministic=False)[0]
    b = NaturalPolicy(seed=4).predict(H, deterministic=False)[0]
    assert np.array_equal(a, b)
    with pytest.raises(TypeError, match="temperature"):
        NaturalPolicy().action_probs(H[:2], temperature="0")
    with pytest.raises(TypeError, match="seed"):
        OraclePolicy("ngood4", seed=1.5)
