"""measures: how many nats of optimization (Op) and impact (Imp) a policy applies to its world.

The measures are defined in docs/spec.md §4.

>>> import measures
>>> r = measures.measure(policy, task="ngood4")        # any policy: callable, torch, SB3, agents
>>> r.op, r.imp, r.imp_min, r.op_theory, r.success, r.ci["op"]

* :func:`measure` — split-history Op/Imp, exact (default) or the post's Monte Carlo, with bootstrap CIs;
* :func:`cross_objective`, :func:`identify_objective` — every task at once, and which one the policy pursues;
* :func:`self_evaluate` — the same figures in the model's own predicted world;
* :mod:`measures.theory` — ``op_theory``, ``imp_min``, ``entropy``, ``kl``;
* :mod:`measures.differential` — Jacobian Op/Imp (Appendix A) with a ``torch.func`` helper;
* :func:`site_measures` (:mod:`measures.internal`) — the same on a transformer's own activations, per
  history and internal site (docs/internal.md);
* :func:`measure_mdp`, :func:`measure_simulator`, :func:`meg` — Op/Imp in any tabular Gymnasium world (exact)
  or copyable simulator (Monte Carlo), and MEG beside them (docs/worlds.md).
"""

from measures import differential, internal, theory
from measures.api import MeasureResult, measure
from measures.baselines import natural_action_probs
from measures.cross import ObjectiveIdentification, cross_objective, identify_objective
from measures.internal import InternalModel, site_measures
from measures.mdp import InfiniteImpactWarning, WorldMeasureResult, measure_mdp
from measures.meg import MEGResult, meg, optimal_policy
from measures.policies import action_probabilities
from measures.self_eval import SelfEvaluation, self_evaluate
from measures.simulate import measure_simulator
from measures.theory import entropy, imp_min, kl, op_theory
from measures.world_policies import epsilon_greedy, uniform_policy
from measures.worlds import TabularWorld, tabular_world

__all__ = [
    "InfiniteImpactWarning",
    "InternalModel",
    "MEGResult",
    "MeasureResult",
    "ObjectiveIdentification",
    "SelfEvaluation",
    "TabularWorld",
    "WorldMeasureResult",
    "action_probabilities",
    "cross_objective",
    "differential",
    "entropy",
    "epsilon_greedy",
    "identify_objective",
    "imp_min",
    "internal",
    "kl",
    "measure",
    "measure_mdp",
    "measure_simulator",
    "meg",
    "natural_action_probs",
    "op_theory",
    "optimal_policy",
    "self_evaluate",
    "site_measures",
    "tabular_world",
    "theory",
    "uniform_policy",
]
