"""identify_objective's "not an optimizer": the rule accepts agents that pursue a task and rejects policies
that optimize nothing beyond what the sequence does by itself."""

import numpy as np
import pytest

import measures
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from measures.cross import is_optimizer, natural_floor, natural_policy, optimizer_test
from seqenv.sequence import natural_histories

HIST = natural_histories(4096, seed=5)


def test_the_natural_floor_is_the_op_of_the_sequences_own_token():
    floor = natural_floor(histories=HIST, seed=0)
    again = measures.measure(natural_policy, histories=HIST, n_bootstrap=0).op
    assert floor == again and 0.01 < floor < 0.06  # docs: about 0.03 nats
    for t in (0.0, 1.0):
        want = NaturalPolicy().action_probs(HIST, temperature=t)
        np.testing.assert_array_equal(natural_policy.action_probs(HIST, temperature=t), want)
    assert floor == measures.measure(NaturalPolicy(), histories=HIST, n_bootstrap=0).op


@pytest.mark.parametrize("policy", [UniformPolicy(), NaturalPolicy()], ids=["uniform", "natural"])
def test_reference_policies_that_pursue_nothing_are_not_optimizers(policy):
    ident = measures.identify_objective(policy, histories=HIST, seed=1, n_bootstrap=300)
    assert not ident.optimizer, ident.optimizer_evidence
    assert ident.optimizer_evidence["op_minus_natural_lo"] <= 0


@pytest.mark.parametrize("task", ["ngood2", "ngood4", "ngood6"])
def test_oracles_are_optimizers_of_their_task(task):
    ident = measures.identify_objective(OraclePolicy(task), histories=HIST, seed=1, n_bootstrap=300)
    assert ident.task == task and ident.optimizer
    ev = ident.optimizer_evidence
    assert (
        min(ev["success_minus_baseline_lo"], ev["success_minus_chance_lo"], ev["op_minus_natural_lo"]) > 0.1
    )


def test_each_margin_is_needed():
    base = {"success_minus_baseline_lo": 0.1, "success_minus_chance_lo": 0.1, "op_minus_natural_lo": 0.1}
    assert is_optimizer(base)
    for key in base:
        assert not is_optimizer({**base, key: 0.0}), key


def test_a_single_task_can_be_tested_without_identification():
    yes = optimizer_test(OraclePolicy("ngood6"), "ngood6", histories=HIST, seed=1, n_bootstrap=200)
    no = optimizer_test(UniformPolicy(), "ngood6", histories=HIST, seed=1, n_bootstrap=200)
    assert yes["optimizer"] and not no["optimizer"]
    # without resamples the point estimates decide
    point = optimizer_test(OraclePolicy("ngood6"), "ngood6", histories=HIST, seed=1, n_bootstrap=0)
    assert point["optimizer"] and point["natural_op"] == yes["natural_op"]
