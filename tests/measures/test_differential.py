"""measures.differential: Jacobian Op and Imp (post, Appendix A; docs/spec.md §4), the torch.func helper."""

import math

import numpy as np
import pytest
import torch

from measures import differential as D

torch.set_num_threads(1)


@pytest.mark.parametrize("k", [0.3, 0.9, 1.0, 1.7, -0.5])
def test_scalar_check_from_the_spec(k):
    # A = P, F = P - (1 - k) A: J_g = dF/dP with A fixed = 1, J_h = dF/dP with A = P = k, so C = k
    assert D.optimization_ratio(1.0, k) == pytest.approx(k)
    assert D.op(1.0, k) == pytest.approx(-math.log(abs(k)), abs=1e-14)
    assert D.imp(1.0, k) == pytest.approx(-math.log(abs(k)) + k * (k - 1), abs=1e-14)
    j = D.jacobians(lambda p: p, lambda a, p: p - (1 - k) * a, torch.tensor(2.5, dtype=torch.float64))
    assert j.j_g.shape == (1, 1) and j.j_g[0, 0] == pytest.approx(1.0) and j.j_h[0, 0] == pytest.approx(k)
    out = D.differential(lambda p: p, lambda a, p: p - (1 - k) * a, 2.5)
    assert out["op"] == pytest.approx(-math.log(abs(k)), abs=1e-14)
    assert out["imp"] == pytest.approx(-math.log(abs(k)) + k * (k - 1), abs=1e-14)


def test_imp_is_zero_at_c_equal_one_and_positive_elsewhere():
    assert D.imp(np.eye(3), np.eye(3)) == pytest.approx(0.0, abs=1e-15)
    for k in (0.2, 0.8, 1.3, 3.0):
        assert D.imp(1.0, k) > 0


def test_diagonal_jacobians_give_the_sum_of_scalar_cases():
    ks = np.array([0.3, 0.5, 2.0, 1.2])
    gs = np.array([1.0, 2.0, 0.5, 4.0])  # J_g need not be the identity: C = J_h / J_g per coordinate
    c = ks / gs
    assert D.op(np.diag(gs), np.diag(ks)) == pytest.approx(sum(-math.log(x) for x in c), abs=1e-13)
    assert D.imp(np.diag(gs), np.diag(ks)) == pytest.approx(
        sum(-math.log(x) + x * (x - 1) for x in c), abs=1e-13
    )
    assert D.op(np.diag(gs), np.diag(ks)) == pytest.approx(sum(D.op(g, k) for g, k in zip(gs, ks)), abs=1e-13)
    assert D.imp(np.diag(gs), np.diag(ks)) == pytest.approx(
        sum(D.imp(g, k) for g, k in zip(gs, ks)), abs=1e-13
    )


def test_general_form_equals_the_square_one_when_both_apply():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g, h = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
        c = np.linalg.solve(g, h)
        assert D.op(g, h, form="general") == pytest.approx(D.op(g, h, form="square"), abs=1e-10)
        assert D.imp(g, h, form="general") == pytest.approx(D.imp(g, h, form="square"), rel=1e-9, abs=1e-9)
        assert D.op(g, h) == pytest.approx(-np.log(abs(np.linalg.det(c))), abs=1e-10)
        assert D.imp(g, h) == pytest.approx(
            -np.log(abs(np.linalg.det(c))) + np.trace(c @ c.T) - np.trace(c), rel=1e-9
        )


def test_non_square_jacobians_follow_the_general_formula():
    rng = np.random.default_rng(1)
    g, h = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    gg, hh = g @ g.T, h @ h.T
    op = 0.5 * np.log(np.linalg.det(gg)) - 0.5 * np.log(np.linalg.det(hh))
    imp = op + np.trace(hh @ np.linalg.inv(gg)) - np.trace(g @ h.T @ np.linalg.inv(gg))
    assert D.op(g, h) == pytest.approx(op, abs=1e-12)
    assert D.imp(g, h) == pytest.approx(imp, abs=1e-12)


def test_torch_func_helper_reproduces_the_closed_forms_from_the_functions_alone():
    k = torch.tensor([0.3, 0.5, 2.0], dtype=torch.float64)

    def f(p):
        return p

    def g(a, p):
        return p - (1 - k) * a

    for mode in ("rev", "fwd"):
        j = D.jacobians(f, g, torch.tensor([1.0, -2.0, 3.0]), mode=mode)
        np.testing.assert_allclose(j.j_g, np.eye(3), atol=1e-15)
        np.testing.assert_allclose(j.j_h, np.diag(k.numpy()), atol=1e-15)
    kk = k.numpy()
    out = D.differential(f, g, [1.0, -2.0, 3.0])
    assert out["op"] == pytest.approx(float(np.sum(-np.log(kk))), abs=1e-13)
    assert out["imp"] == pytest.approx(float(np.sum(-np.log(kk) + kk * (kk - 1))), abs=1e-13)
    # a nonlinear, coupled, non-square system: the helper's Jacobians are the analytic ones
    w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]], dtype=torch.float64)  # F in R^2, P in R^3

    def f2(p):
        return torch.tanh(p)

    def g2(a, p):
        return w @ (p * a) + torch.sin(p[:2])

    p = torch.tensor([0.2, -0.4, 0.9], dtype=torch.float64)
    j = D.jacobians(f2, g2, p)
    a = torch.tanh(p)
    sin_part = torch.diag(torch.cos(p[:2]))
    jg = (w * a).numpy() + np.pad(sin_part.numpy(), ((0, 0), (0, 1)))
    jh = (w * (a + p * (1 - a**2))).numpy() + np.pad(sin_part.numpy(), ((0, 0), (0, 1)))
    np.testing.assert_allclose(j.j_g, jg, atol=1e-14)
    np.testing.assert_allclose(j.j_h, jh, atol=1e-14)
    assert D.differential(f2, g2, p)["op"] == pytest.approx(D.op(jg, jh), abs=1e-12)


@pytest.mark.parametrize(
    "j_g, j_h, match",
    [
        (np.zeros((2, 2)), np.eye(2), "J_g is singular"),
        (np.eye(2), np.array([[1.0, 2.0], [2.0, 4.0]]), "J_h is singular"),
        (np.eye(2), np.eye(3), r"same shape \(dim F, dim P\), got \(2, 2\) and \(3, 3\)"),
        (np.ones((3, 2)), np.ones((3, 2)), r"dim F > dim P \(Jacobians of shape \(3, 2\)\)"),
        (np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]), np.ones((2, 3)), "J_g J_g\\^T is singular"),
        (np.array([[np.nan]]), np.array([[1.0]]), "J_g holds a non-finite entry nan"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), r"got shape \(2, 2, 2\)"),
    ],
)
def test_singular_or_ill_shaped_jacobians_raise(j_g, j_h, match):
    with pytest.raises(ValueError, match=match):
        D.imp(j_g, j_h)
    with pytest.raises(ValueError, match=match):
        D.op(j_g, j_h)


def test_square_form_on_non_square_input_and_unknown_form_raise():
    with pytest.raises(ValueError, match=r"square form needs dim F = dim P, got Jacobians of shape \(2, 3\)"):
        D.op(np.ones((2, 3)), np.ones((2, 3)), form="square")
    with pytest.raises(ValueError, match="unknown form 'diag'"):
        D.op(1.0, 1.0, form="diag")
