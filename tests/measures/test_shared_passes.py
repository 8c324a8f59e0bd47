"""measures.policies.CachedPolicy: the measures of one model share its forward passes, with the same numbers.

A measure unit of the sweep (cross-objective table, objective identification or the optimizer test,
self-evaluation) used to run the policy on the histories once per measure; through a ``CachedPolicy`` it runs
the policy once on the ``N`` histories and the model once on self-evaluation's ``8 N`` contexts.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import measures
from agents.pipeline.config import SweepConfig
from agents.pipeline.measure import policy_rows, self_evaluation
from agents.policy import AgentPolicy
from agents.transformer import SplitSeqTransformer
from measures.api import IntervalWarning
from measures.cross import optimizer_test
from measures.policies import CachedPolicy, action_probabilities, cached, next_token_distribution
from seqenv.sequence import N_OUT, VOCAB, natural_histories

torch.set_num_threads(1)
N = 512
HIST = natural_histories(N, seed=5)
KW = {"histories": HIST, "seed": 3, "n_bootstrap": 200}


def tiny_agent(seed: int = 0) -> AgentPolicy:
    torch.manual_seed(seed)
    return AgentPolicy(SplitSeqTransformer("tiny"))


class Counting:
    """A policy and next-token model that counts its calls and the rows it was asked about."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = {"action_probs": [], "next_token_probs": []}

    def action_probs(self, histories, temperature=0.0):
        self.calls["action_probs"].append(len(histories))
        return self.inner.action_probs(histories, temperature)

    def next_token_probs(self, contexts):
        self.calls["next_token_probs"].append(len(contexts))
        return self.inner.next_token_probs(contexts)


class LogitModule(torch.nn.Module):
    """A torch module giving 16 next-token logits that depend on every token (no ties among actions)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.emb = torch.nn.Embedding(VOCAB, VOCAB)
        self.pos = torch.nn.Parameter(torch.randn(20, VOCAB))

    def forward(self, idx):
        return (self.emb(idx) * self.pos).sum(1)


def equal_results(a, b) -> bool:
    """Exact equality of two results (NaN equal to NaN), recursing into dicts, frames and dataclasses."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        return True
    if hasattr(a, "to_dict") and not isinstance(a, dict):
        return equal_results(a.to_dict(), b.to_dict())
    if hasattr(a, "__dataclass_fields__"):
        return all(equal_results(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal_results(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal_results(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def all_measures(policy, temperature: float) -> list:
    """Every measure of a measure unit, as the sweep calls them, on ``policy``."""
    kw = {**KW, "temperature": temperature}
    tasks = ("ngood2", "ngood4", "ngood6")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntervalWarning)
        return [
            measures.cross_objective(policy, tasks, ci=True, **kw),
            measures.identify_objective(policy, tasks, **kw),
            optimizer_test(policy, "ngood4", **kw),
            measures.measure(policy, "ngood6", **kw),
            measures.self_evaluate(policy, "ngood4", **kw),
        ]


@pytest.mark.parametrize("kind", ["agent", "torch module"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_passes_give_exactly_the_numbers_of_independent_calls(kind, temperature):
    policy = tiny_agent() if kind == "agent" else LogitModule()
    view = CachedPolicy(policy)
    for alone, shared in zip(all_measures(policy, temperature), all_measures(view, temperature), strict=True):
        assert equal_results(alone, shared)
    # once on the histories at this temperature, once on the 8N contexts of self-evaluation
    assert view.passes == [("action_probs", N), ("next_token", N_OUT * N)]


def test_a_sweep_measure_unit_runs_the_model_once_per_input_set():
    """The sweep's rows (cross-objective, identification, self-evaluation): the policy runs on the N histories
    once and the model on the 8N contexts once: 9N transformer rows, where the independent calls ran 11N."""
    sweep = SweepConfig(n_histories=N)
    agent = tiny_agent()
    rows_seen = []
    agent.model.register_forward_hook(lambda module, args, out: rows_seen.append(len(args[0])))
    results = {}
    for share in (False, True):
        counting = Counting(agent)
        policy = cached(counting) if share else counting
        rows_seen.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntervalWarning)
            results[share] = (
                policy_rows(policy, HIST, sweep, share=share),
                self_evaluation(policy, HIST, sweep),
            )
        results[share, "calls"] = counting.calls
        results[share, "rows"] = sum(rows_seen)
    assert results[False, "calls"] == {"action_probs": [N, N, N], "next_token_probs": [N_OUT * N]}
    assert results[True, "calls"] == {"action_probs": [N], "next_token_probs": [N_OUT * N]}
    assert (results[False, "rows"], results[True, "rows"]) == (11 * N, 9 * N)
    assert equal_results(results[False], results[True])


def test_a_one_task_sweep_shares_the_pass_with_the_optimizer_test():
    sweep = SweepConfig(n_histories=N, tasks=("ngood4",))
    counting = Counting(tiny_agent())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntervalWarning)
        alone = policy_rows(counting, HIST, sweep, share=False)
        assert counting.calls["action_probs"] == [N, N]  # cross_objective and optimizer_test
        counting.calls["action_probs"].clear()
        shared = policy_rows(counting, HIST, sweep)
    assert counting.calls["action_probs"] == [N]
    assert equal_results(alone, shared)


def test_results_are_remembered_by_content_and_temperature_and_handed_out_as_copies():
    counting = Counting(tiny_agent())
    view = CachedPolicy(counting)
    first = view.action_probs(HIST)
    first[:] = -1.0  # the caller's copy: the remembered result is untouched
    again = action_probabilities(view, HIST.copy())  # equal content, another array: remembered
    assert counting.calls["action_probs"] == [N]
    assert np.array_equal(again, action_probabilities(counting.inner, HIST))
    action_probabilities(view, HIST, temperature=0.5)  # another temperature: a new pass
    changed = HIST.copy()
    changed[0, 0] = (changed[0, 0] + 2) % VOCAB  # another history set: a new pass
    action_probabilities(view, changed)
    assert counting.calls["action_probs"] == [N, N, N]
    ctx = HIST[:64]
    assert np.array_equal(next_token_distribution(view, ctx), view.next_token_probs(ctx.copy()))
    assert counting.calls["next_token_probs"] == [64]
    assert [kind for kind, _ in view.passes] == ["action_probs"] * 3 + ["next_token"]


def test_bad_policy_output_raises_through_the_view_each_time():
    def half(histories):
        return np.full((len(histories), N_OUT), 0.5 / N_OUT)

    view = CachedPolicy(half)
    for _ in range(2):  # nothing is remembered from a failed pass
        with pytest.raises(
            ValueError, match="policy half returned probabilities for history 0 that sum to 0.5"
        ):
            measures.measure(view, histories=HIST, n_bootstrap=0)
    assert view.passes == []
    actions_only = CachedPolicy(lambda h: h[:, 0] % N_OUT)  # acts, but predicts no next token
    with pytest.raises(TypeError, match="cannot self-evaluate function"):
        measures.self_evaluate(actions_only, histories=HIST, n_bootstrap=0)


def test_a_view_is_not_wrapped_twice():
    view = CachedPolicy(tiny_agent())
    assert cached(view) is view
    with pytest.raises(TypeError, match="already a CachedPolicy"):
        CachedPolicy(view)
