"""measures.theory: the post's closed forms Op_theory and Imp_min, and entropy / KL over arrays."""

import math

import numpy as np
import pytest

from measures.theory import entropy, imp_min, kl, op_theory


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75, 0.1])
def test_op_theory_is_zero_at_chance_and_ln_one_over_p_at_certain_success(p):
    assert op_theory(p, p) == 0.0
    assert op_theory(1.0, p) == pytest.approx(math.log(1 / p), abs=1e-15)
    assert op_theory(0.0, p) == pytest.approx(math.log(1 / (1 - p)), abs=1e-15)


def test_op_theory_at_a_worked_point():
    # ngood4 (p = 0.5), s = 0.9: 0.9 ln 1.8 + 0.1 ln 0.2
    assert op_theory(0.9, 0.5) == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), abs=1e-15)
    # the post's example: ngood6 (p = 0.75) at s = 0.85 implies only ~0.03 nats
    assert op_theory(0.85, 0.75) == pytest.approx(0.0300, abs=5e-4)


def test_imp_min_bounds_and_boundaries():
    assert imp_min(0.3, 0.3) == 0.0
    assert imp_min(1.0, 0.5) == pytest.approx(math.log(2), abs=1e-15)
    assert imp_min(0.0, 0.25) == pytest.approx(math.log(1 / 0.75), abs=1e-15)
    assert imp_min(0.5, 0.0) == math.inf  # a success the comparison future never has: infinite KL
    assert imp_min(0.0, 0.0) == 0.0 and imp_min(1.0, 1.0) == 0.0  # 0 ln 0 = 0


def test_closed_forms_broadcast_over_arrays():
    s = np.linspace(0, 1, 11)
    out = op_theory(s, np.array([[0.25], [0.5], [0.75]]))
    assert out.shape == (3, 11)
    assert (out >= 0).all()
    assert np.argmin(out[1]) == 5  # minimum 0 at s = p = 0.5
    np.testing.assert_allclose(imp_min(s, 0.4), [imp_min(float(x), 0.4) for x in s], rtol=0, atol=1e-15)


def test_entropy_and_kl():
    assert entropy(np.full(8, 1 / 8)) == pytest.approx(math.log(8), abs=1e-15)
    assert entropy(np.eye(8)[3]) == 0.0
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert kl(p, q) == pytest.approx(math.log(2), abs=1e-15)
    assert kl(q, p) == math.inf
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(8), 100), rng.dirichlet(np.ones(8), 100)
    assert (kl(a, b) >= 0).all() and (kl(a, a) == 0).all()
    np.testing.assert_allclose(entropy(a.T, axis=0), entropy(a), atol=1e-15)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: op_theory(1.2, 0.5), "s must be a rate in \\[0, 1\\], got 1.2"),
        (lambda: op_theory(0.5, -0.1), "p must be a rate in \\[0, 1\\], got -0.1"),
        (lambda: imp_min(float("nan"), 0.5), "s must be a rate in \\[0, 1\\], got nan"),
        (lambda: imp_min(0.5, 2), "s_prime must be a rate in \\[0, 1\\], got 2.0"),
        (lambda: entropy(np.array([0.5, 0.6])), "sums to 1.1"),
        (lambda: entropy(np.array([1.5, -0.5])), "negative probability -0.5"),
        (lambda: kl(np.array([0.5, 0.5]), np.array([np.nan, 1.0])), "non-finite value nan"),
    ],
)
def test_bad_rates_and_distributions_raise_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
