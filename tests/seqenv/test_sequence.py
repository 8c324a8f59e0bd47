"""The sequence (docs/spec.md §1): the rule, the generator, natural histories and the exact world model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from seqenv.sequence import (
    BURN_IN,
    CONTEXT,
    N_OUT,
    P_DET,
    P_MATCH,
    TOKEN_LOG,
    SequenceStreams,
    det_from_logsum,
    deterministic_next,
    generate_sequences,
    natural_histories,
    natural_odd_probs,
    next_deterministic,
    noise_positions,
    partial_logsum,
    transition_probs,
    validate_histories,
)
from seqenv.tasks import TASKS, good_mask
from tests.conftest import P_ALPHA, Z, within


def literal_rule(window: list[int]) -> int:
    """docs/spec.md §1 with Python ints: (prod(s + 1) mod 17) mod 8."""
    return math.prod(s + 1 for s in window) % 17 % 8


def chi2_same(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """p-value of a chi-square test that two samples of categories 0..k-1 share one distribution."""
    table = np.stack([np.bincount(a, minlength=k), np.bincount(b, minlength=k)])
    return float(stats.chi2_contingency(table[:, table.sum(0) > 0])[1])


def literal_streams(n: int, seed: int, burn_in: int, chunks: list[int]) -> list[np.ndarray]:
    """The recurrence applied token by token with deterministic_next, from the draws SequenceStreams makes."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_OUT, size=(16, n), dtype=np.uint8)
    start[1::2] += N_OUT
    seqs = [list(map(int, start[:, i])) for i in range(n)]
    position, out = 16, []
    chunked_burn = [min(256, burn_in - i) for i in range(0, burn_in, 256)]
    for k in chunked_burn + chunks:
        hits = noise_positions(rng, k * n)
        values = rng.integers(0, N_OUT, size=len(hits), dtype=np.uint8)
        noise = {(int(h) // n, int(h) % n): int(v) for h, v in zip(hits, values)}
        tokens = np.empty((k, n), dtype=np.uint8)
        for j in range(k):
            for i in range(n):
                value = noise.get((j, i), int(deterministic_next(np.array(seqs[i][-16:]))))
                seqs[i].append(value + N_OUT * ((position + j) % 2))
                tokens[j, i] = seqs[i][-1]
        position += k
        out.append(tokens)
    return out[len(chunked_burn) :]


# --- the rule ---------------------------------------------------------------------------------------------


def test_token_log_is_the_discrete_log_of_the_factor():
    for s in range(16):
        assert pow(3, int(TOKEN_LOG[s]), 17) == s + 1
    assert sorted(TOKEN_LOG.tolist()) == list(range(16))  # 3 generates the units mod 17


def test_det_from_logsum_is_three_to_the_logsum_mod_17_mod_8():
    ks = np.arange(64)
    assert det_from_logsum(ks).tolist() == [pow(3, int(k), 17) % 8 for k in ks]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=16, max_size=16))
def test_deterministic_next_equals_the_literal_formula(window):
    assert int(deterministic_next(np.array(window))) == literal_rule(window)


def test_deterministic_next_batched_equals_the_literal_formula():
    windows = np.random.default_rng(0).integers(0, 16, size=(3, 500, 16))
    got = deterministic_next(windows)
    assert got.shape == (3, 500) and got.dtype == np.uint8
    assert got.ravel().tolist() == [literal_rule(w) for w in windows.reshape(-1, 16).tolist()]


# --- the generator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "seed", "burn_in", "chunks"),
    [(5, 0, 1, [3, 17, 40]), (7, 1, 301, [1, 2, 16, 50]), (260, 2, 1, [20, 17]), (3, 4, 3, [5] * 7)],
)
def test_streams_are_the_literal_recurrence_on_the_same_draws(n, seed, burn_in, chunks):
    streams = SequenceStreams(n, seed, burn_in=burn_in)
    got = [streams.advance(k) for k in chunks]
    for g, want in zip(got, literal_streams(n, seed, burn_in, chunks)):
        np.testing.assert_array_equal(g, want)


def test_noise_positions_are_bernoulli_002():
    rng = np.random.default_rng(1)
    size = 2_000_000
    pos = noise_positions(rng, size)
    assert pos.dtype == np.int64 and np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < size
    assert within(len(pos) / size, 0.02, size)
    # independent of position: uniform over 50 blocks, and gaps geometric (P(gap = 1) = 0.02)
    assert stats.chisquare(np.bincount(pos * 50 // size, minlength=50)).pvalue > P_ALPHA
    gaps = np.diff(pos)
    assert abs(gaps.mean() - 50) <= Z * math.sqrt(0.98 / 0.02**2 / len(gaps))
    # gaps follow the geometric law P(g) = 0.98**(g - 1) * 0.02: chi-square over g = 1..200 and g > 200
    counts = np.bincount(np.minimum(gaps, 201), minlength=202)[1:]
    pmf = 0.98 ** np.arange(200) * 0.02
    expected = len(gaps) * np.r_[pmf, 1 - pmf.sum()]
    assert stats.chisquare(counts, expected).pvalue > P_ALPHA


def test_generated_tokens_obey_the_recurrence_at_p_match_and_noise_is_uniform():
    seqs = generate_sequences(400, 600, seed=2)
    assert seqs.dtype == np.int64 and seqs.shape == (400, 600)
    windows = np.lib.stride_tricks.sliding_window_view(seqs, 17, axis=1)  # 16 predecessors and the token
    d = deterministic_next(windows[..., :16]).astype(np.int64)
    value = windows[..., 16] % N_OUT
    match = value == d
    assert within(match.mean(), P_MATCH, match.size), match.mean()
    # a miss is noise that drew one of the 7 other values, uniformly
    offset = (value[~match] - d[~match]) % N_OUT
    assert stats.chisquare(np.bincount(offset, minlength=N_OUT)[1:]).pvalue > P_ALPHA


def test_sequences_alternate_parity_starting_on_an_odd_position():
    seqs = generate_sequences(50, 41, seed=3)
    assert np.all((seqs[:, 0::2] >= 8) & (seqs[:, 0::2] <= 15))
    assert np.all((seqs[:, 1::2] >= 0) & (seqs[:, 1::2] <= 7))
    validate_histories(seqs[:, :20])  # a row's first 20 tokens are a history, token 20 its next (odd) one


def test_seeds_reproduce_and_differ():
    np.testing.assert_array_equal(natural_histories(100, seed=5), natural_histories(100, seed=5))
    assert (natural_histories(100, seed=5) != natural_histories(100, seed=6)).any()
    a, b = SequenceStreams(10, 7), SequenceStreams(10, 7)
    for k in (3, 20, 1):
        np.testing.assert_array_equal(a.advance(k), b.advance(k))


# --- natural histories ------------------------------------------------------------------------------------


def test_natural_histories_shape_parity_and_partial_logsum():
    streams = SequenceStreams(2000, seed=4)
    hist, partial = streams.histories()
    assert hist.shape == (2000, CONTEXT) and hist.dtype == np.int64
    validate_histories(hist)
    np.testing.assert_array_equal(partial, partial_logsum(hist))
    np.testing.assert_array_equal(partial, TOKEN_LOG[hist[:, 5:]].sum(axis=1) % 16)
    assert streams.position % 2 == 1  # the next token is odd


def test_natural_histories_obey_the_recurrence_at_p_match():
    hist = natural_histories(100_000, seed=8)
    d = deterministic_next(np.lib.stride_tricks.sliding_window_view(hist, 16, axis=1)[:, :4])
    match = d == hist[:, 16:] % N_OUT  # every position with 16 predecessors in the history
    assert within(match.mean(), P_MATCH, match.size), match.mean()


def _stationary_tokens(n: int, seed: int, burn_in: int) -> np.ndarray:
    """One (odd, even) token pair per stream, at the end of sequences ``burn_in`` tokens long, one per stream."""
    return SequenceStreams(n, seed, burn_in=burn_in).advance(2).T.astype(np.int64)


def test_natural_history_marginals_match_long_sequences():
    hist = natural_histories(60_000, seed=9)
    far = _stationary_tokens(60_000, 10, burn_in=4095)  # independent streams, far into their sequences
    for col in range(CONTEXT):
        ref = far[:, 0] - N_OUT if col % 2 == 0 else far[:, 1]
        assert chi2_same(hist[:, col] % N_OUT, ref, N_OUT) > P_ALPHA / CONTEXT, col


def _stationarity_statistics(hist: np.ndarray) -> dict[str, np.ndarray]:
    d = next_deterministic(hist)  # (n, 8): the deterministic next even token of every action
    out = {
        "last token": hist[:, 19],
        "tokens 18-19": (hist[:, 18] - N_OUT) * N_OUT + hist[:, 19],
        "tokens 0 and 19": (hist[:, 0] - N_OUT) * N_OUT + hist[:, 19],
        "partial log-sum": partial_logsum(hist).astype(np.int64),
        "distinct outcomes": (np.diff(np.sort(d, axis=1), axis=1) != 0).sum(axis=1),
    }
    for task in TASKS:
        out[f"oracle can succeed on {task}"] = good_mask(task)[d].any(axis=1).astype(np.int64)
    return out


@pytest.fixture(scope="module")
def reference_statistics():
    """Statistics of 100,000 histories burnt in for 4095 tokens (far beyond any plausible mixing time)."""
    return _stationarity_statistics(SequenceStreams(100_000, 12, burn_in=4095).histories()[0])


def _compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: chi2_same(a[name], b[name], int(max(a[name].max(), b[name].max())) + 1) for name in a}


def test_burn_in_reaches_the_stationary_process(reference_statistics):
    """BURN_IN against a 4095-token burn-in; the same test flags a 31-token burn-in (it has the power)."""
    ours = _stationarity_statistics(natural_histories(100_000, seed=11))
    assert all(p > P_ALPHA for p in _compare(ours, reference_statistics).values())
    short = _stationarity_statistics(SequenceStreams(100_000, 13, burn_in=31).histories()[0])
    assert min(_compare(short, reference_statistics).values()) < P_ALPHA


@pytest.mark.slow
def test_burn_in_reaches_the_stationary_process_large_sample():
    n = 2_000_000
    ref = _stationarity_statistics(SequenceStreams(n, 14, burn_in=4095).histories()[0])
    ours = _stationarity_statistics(SequenceStreams(n, 15, burn_in=BURN_IN).histories()[0])
    assert all(p > P_ALPHA for p in _compare(ours, ref).values())
    short = _stationarity_statistics(SequenceStreams(n, 16, burn_in=63).histories()[0])
    assert min(_compare(short, ref).values()) < P_ALPHA


# --- the world model --------------------------------------------------------------------------------------


histories_st = st.lists(st.integers(0, N_OUT - 1), min_size=CONTEXT, max_size=CONTEXT).map(
    lambda values: np.array(values) + N_OUT * (np.arange(CONTEXT) % 2 == 0)  # odd positions hold 8..15
)


@settings(max_examples=300, deadline=None)
@given(histories_st, st.integers(0, N_OUT - 1))
def test_next_deterministic_is_the_rule_on_the_last_15_tokens_and_the_action(h, action):
    window = h[-15:].tolist() + [N_OUT + action]
    assert int(next_deterministic(h, np.int64(action))) == literal_rule(window)
    assert int(next_deterministic(h)[action]) == literal_rule(window)
    probs = transition_probs(h, np.int64(action))
    assert probs[literal_rule(window)] == P_MATCH and np.count_nonzero(probs == (1 - P_DET) / N_OUT) == 7


def test_transition_probs_closed_form():
    h = natural_histories(3000, seed=13).reshape(30, 100, CONTEXT)
    actions = np.random.default_rng(0).integers(0, N_OUT, size=(30, 100))
    probs = transition_probs(h, actions)
    assert probs.shape == (30, 100, N_OUT) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-15)
    want = np.full((30, 100, N_OUT), (1 - P_DET) / N_OUT)
    np.put_along_axis(
        want, next_deterministic(h, actions)[..., None].astype(np.intp), P_DET + 0.0025, axis=-1
    )
    np.testing.assert_array_equal(probs, want)
    every = transition_probs(h)  # (..., action, x)
    assert every.shape == (30, 100, N_OUT, N_OUT)
    np.testing.assert_array_equal(
        np.take_along_axis(every, actions[..., None, None], axis=-2)[..., 0, :], probs
    )
    assert P_MATCH == pytest.approx(0.9825, abs=1e-15)


def test_transition_probs_accepts_any_integer_dtype():
    h = natural_histories(10, seed=14)
    ref = transition_probs(h)
    for dtype in (np.uint8, np.int16, np.int32):
        np.testing.assert_array_equal(transition_probs(h.astype(dtype)), ref)
    np.testing.assert_array_equal(transition_probs(h.tolist()), ref)


@pytest.mark.parametrize(
    ("histories", "error", "match"),
    [
        (np.zeros((4, 19), dtype=np.int64), ValueError, r"shape \(\.\.\., 20\).*\(4, 19\)"),
        (np.zeros(20, dtype=np.float64), TypeError, "dtype float64"),
        (np.zeros(20, dtype=bool), TypeError, "dtype bool"),
        (np.full(20, 16), ValueError, "token 16; expected tokens in 0..15"),
        (np.full(20, -1), ValueError, "token -1"),
        (np.tile([0, 8], 10), ValueError, "column 0 holds token 0, expected 8..15"),
        (np.zeros((), dtype=np.int64), ValueError, r"got \(\)"),
    ],
)
def test_transition_probs_rejects_bad_histories(histories, error, match):
    with pytest.raises(error, match=match):
        transition_probs(histories)


def test_transition_probs_rejects_bad_actions():
    h = natural_histories(4, seed=15)
    with pytest.raises(ValueError, match="action 8 is out of range: expected 0..7"):
        transition_probs(h, np.array([0, 1, 8, 2]))
    with pytest.raises(ValueError, match="action -1 is out of range"):
        transition_probs(h, np.array([0, -1, 3, 2]))
    with pytest.raises(TypeError, match="dtype float64"):
        transition_probs(h, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"shape \(4,\).*got \(3,\)"):
        transition_probs(h, np.array([0, 1, 2]))


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"n \(streams\) must be an int >= 1, got 0"):
        SequenceStreams(0)
    with pytest.raises(ValueError, match="burn_in must be a non-negative odd int.*got 100"):
        SequenceStreams(4, burn_in=100)
    with pytest.raises(ValueError, match=r"length \(tokens\) must be an int >= 1, got 0"):
        generate_sequences(3, 0)
    with pytest.raises(ValueError, match=r"window must have shape \(\.\.\., 16\), got \(15,\)"):
        deterministic_next(np.zeros(15, dtype=int))
    with pytest.raises(ValueError, match="n_tokens must be an int >= 0, got -1"):
        SequenceStreams(2).advance(-1)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: SequenceStreams(2.0), TypeError, r"n \(streams\) must be an int >= 1, got 2.0"),
        (lambda: SequenceStreams(True), TypeError, r"n \(streams\) must be an int >= 1, got True"),
        (
            lambda: SequenceStreams(2, burn_in=-1),
            ValueError,
            "burn_in must be a non-negative odd int.*got -1",
        ),
        (
            lambda: SequenceStreams(2, burn_in=3.0),
            TypeError,
            "burn_in must be a non-negative odd int.*got 3.0",
        ),
        (lambda: generate_sequences(3, 2.5), TypeError, r"length \(tokens\) must be an int >= 1, got 2.5"),
        (lambda: SequenceStreams(2).advance(np.float64(1)), TypeError, "n_tokens must be an int >= 0"),
    ],
)
def test_generator_rejects_non_int_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_generator_accepts_numpy_ints_with_the_same_draws():
    a = SequenceStreams(np.int64(5), seed=3, burn_in=np.int32(31)).advance(np.int16(7))
    b = SequenceStreams(5, seed=3, burn_in=31).advance(7)
    np.testing.assert_array_equal(a, b)


def test_natural_odd_probs_is_the_generators_law_of_the_odd_token():
    seqs = generate_sequences(4096, 21, seed=23)  # row [:20] is a history, [20] its next (odd) token
    probs = natural_odd_probs(seqs[:, :20])
    d = deterministic_next(seqs[:, 4:20])
    assert probs.shape == (4096, N_OUT) and probs.dtype == np.float64
    np.testing.assert_array_equal(probs.argmax(axis=1), d)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert set(np.unique(probs)) == {(1 - P_DET) / N_OUT, P_MATCH}
    # the odd token the generator wrote is its deterministic value about P_MATCH of the time
    hits = np.mean(seqs[:, 20] - N_OUT == d)
    assert within(hits, P_MATCH, 4096)
