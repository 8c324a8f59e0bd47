"""measures.self_evaluate: Op and Imp with the model's own prediction of s_{t+1} in place of the world."""

import math

import numpy as np
import pytest
import torch

import measures
from agents.policy import AgentPolicy
from agents.transformer import SplitSeqTransformer
from seqenv.sequence import P_DET, P_MATCH, deterministic_next, natural_histories, transition_probs
from seqenv.tasks import good_mask

torch.set_num_threads(1)
HIST = natural_histories(1024, seed=31)


class ExactPredictor:
    """Predicts the next token exactly as the generator writes it; acts as the ngood4 oracle.

    The context is the 20 tokens ending at the odd token s_t, so the next (even) token's deterministic value
    comes from the context's last 16 tokens. ``odd_mass`` moves that much probability onto token 8 (an odd
    token, impossible at an even position) to check the renormalisation.
    """

    def __init__(self, odd_mass: float = 0.0):
        self.odd_mass = odd_mass

    def next_token_probs(self, contexts):
        d = deterministic_next(contexts[:, -16:])
        probs = np.zeros((len(contexts), 16))
        probs[:, :8] = (1 - P_DET) / 8
        probs[np.arange(len(d)), d] = P_MATCH
        probs *= 1 - self.odd_mass
        probs[:, 8] += self.odd_mass
        return probs

    def action_probs(self, histories, temperature=0.0):
        g = transition_probs(histories)[..., good_mask("ngood4")].sum(-1)
        return np.eye(8)[g.argmax(axis=1)]


class UniformPredictor(ExactPredictor):
    def next_token_probs(self, contexts):
        return np.tile(np.r_[np.full(8, 1 / 8), np.zeros(8)], (len(contexts), 1))


def test_a_model_that_predicts_the_world_exactly_self_evaluates_exactly():
    for odd in (0.0, 0.5):
        r = measures.self_evaluate(ExactPredictor(odd), histories=HIST, n_bootstrap=100)
        assert r.op > 0.5  # the oracle optimizes
        assert r.op_self == pytest.approx(r.op, abs=1e-12) and r.imp_self == pytest.approx(r.imp, abs=1e-12)
        assert r.success_self == pytest.approx(r.success, abs=1e-12)
        assert r.baseline_success_self == pytest.approx(r.baseline_success, abs=1e-12)
        assert r.world_kl == pytest.approx(0.0, abs=1e-12)
        assert r.odd_mass == pytest.approx(odd, abs=1e-12)
        assert max(map(abs, r.ci["op_error"])) < 1e-12  # paired resamples: the error is exactly 0 in each
    measured = measures.measure(ExactPredictor(), histories=HIST, n_bootstrap=0)
    assert r.op == pytest.approx(measured.op, abs=1e-12) and r.imp == pytest.approx(measured.imp, abs=1e-12)


def test_a_model_that_predicts_a_flat_world_sees_no_optimization():
    r = measures.self_evaluate(UniformPredictor(), histories=HIST, n_bootstrap=0)
    assert r.op_self == pytest.approx(0.0, abs=1e-12) and r.imp_self == pytest.approx(0.0, abs=1e-12)
    assert r.success_self == pytest.approx(0.5, abs=1e-12)
    h_t = -P_MATCH * math.log(P_MATCH) - 7 * (1 - P_MATCH) / 7 * math.log((1 - P_DET) / 8)
    assert r.world_kl == pytest.approx(math.log(8) - h_t, abs=1e-12)  # KL(T || uniform) on every action
    assert r.op_error == pytest.approx(-r.op) and r.to_dict()["op_error"] == r.op_error


def test_a_transformer_module_and_its_agent_policy_self_evaluate_alike():
    torch.manual_seed(2)
    model = SplitSeqTransformer("tiny")
    a = measures.self_evaluate(model, histories=HIST[:256], n_bootstrap=0)
    b = measures.self_evaluate(AgentPolicy(model), histories=HIST[:256], n_bootstrap=0)
    for name in ("op", "op_self", "imp", "imp_self", "success_self", "odd_mass", "world_kl"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-9), name
    # a separate acting policy: the model only supplies the world
    c = measures.self_evaluate(
        ExactPredictor(), histories=HIST[:256], policy=AgentPolicy(model), n_bootstrap=0
    )
    assert c.op == pytest.approx(a.op, abs=1e-12) and c.op_self == pytest.approx(a.op, abs=1e-12)


class Broken:
    def __init__(self, probs):
        self.probs = probs

    def next_token_probs(self, contexts):
        return self.probs(len(contexts))

    def action_probs(self, histories, temperature=0.0):
        return np.eye(8)[np.zeros(len(histories), dtype=int)]


@pytest.mark.parametrize(
    "model, error, match",
    [
        (Broken(lambda m: np.full((m, 8), 1 / 8)), ValueError, r"shape \(512, 8\); expected \(512, 16\)"),
        (
            Broken(lambda m: np.tile(np.r_[np.zeros(8), np.full(8, 1 / 8)], (m, 1))),
            ValueError,
            "no probability on tokens 0..7",
        ),
        (Broken(lambda m: np.full((m, 16), 0.1)), ValueError, "sum to 1.6"),
        (lambda h: np.zeros(len(h), dtype=int), TypeError, "cannot self-evaluate function"),
    ],
)
def test_bad_models_raise(model, error, match):
    with pytest.raises(error, match=match):
        measures.self_evaluate(model, histories=HIST[:64], n_bootstrap=0)


class OraclePredictingNaturalOnly(ExactPredictor):
    """Acts as the ngood4 oracle; predicts the world exactly after the sequence's own odd token and, after any
    other action, the world's answer to the natural token (the mistake of a model only trained on natural
    sequences)."""

    def next_token_probs(self, contexts):
        natural = contexts.copy()
        natural[:, -1] = 8 + deterministic_next(contexts[:, -17:-1])
        return super().next_token_probs(natural)


def test_world_errors_are_split_into_natural_and_counterfactual_contexts():
    exact = measures.self_evaluate(ExactPredictor(), histories=HIST, n_bootstrap=0)
    assert exact.world_kl_natural == pytest.approx(0, abs=1e-12) and exact.world_acc_counterfactual == 1.0
    r = measures.self_evaluate(OraclePredictingNaturalOnly(), histories=HIST, n_bootstrap=0)
    assert r.world_kl_natural == pytest.approx(0, abs=1e-12) and r.world_acc_natural == 1.0
    # after another action the predicted token is the natural one's outcome: right only when both agree
    natural = measures.self_eval.natural_contexts(HIST)
    d = deterministic_next(
        np.concatenate(
            [np.repeat(HIST[:, None, 1:], 8, 1), (8 + np.arange(8))[None, :, None].repeat(len(HIST), 0)],
            axis=2,
        )[..., -16:]
    )
    agree = (d == d[natural][:, None])[~natural].mean()
    assert r.world_acc_counterfactual == pytest.approx(agree, abs=1e-12) and agree < 0.25
    assert r.world_kl_counterfactual > 2.0
    # the split future is built from other histories' actions: this history's natural token only by chance
    pi = OraclePredictingNaturalOnly().action_probs(HIST)
    assert r.natural_share == pytest.approx((pi * natural).sum(1).mean(), abs=1e-12)
    assert r.split_natural_share == pytest.approx((pi.mean(0) * natural).sum(1).mean(), abs=1e-12)
    assert r.split_natural_share < 0.25
    # putting the true world back on counterfactual contexts restores the measured figures exactly here
    assert r.op_self_cf_true == pytest.approx(r.op, abs=1e-12) and r.imp_self_cf_true == pytest.approx(
        r.imp, abs=1e-12
    )
    assert abs(r.op_self - r.op) > 0.05


def test_shares_of_natural_contexts_for_a_policy_that_always_writes_the_natural_token():
    class Natural(ExactPredictor):
        def action_probs(self, histories, temperature=0.0):
            return np.eye(8)[deterministic_next(histories[:, -16:])]

    r = measures.self_evaluate(Natural(), histories=HIST, n_bootstrap=0)
    assert r.natural_share == 1.0
    counts = np.bincount(deterministic_next(HIST[:, -16:]), minlength=8) / len(HIST)
    assert r.split_natural_share == pytest.approx((counts**2).sum(), abs=1e-12)
