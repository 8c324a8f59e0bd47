"""Self-evaluation (the post's "Model Self-Evaluation"; docs/spec.md §4): Op and Imp in the model's world.

The measures of :mod:`measures.split` use the exact world ``T(x|h, a)``. Self-evaluation replaces it
with the model's prediction of the next even token ``s_{t+1}`` after the history and its own odd token:
the context is the 20 tokens ending at ``s_t``, i.e. ``concat(h[1:], [8 + a])``. The model's 16-way
next-token distribution is **renormalised over the even tokens 0..7** (the mass it puts on 8..15 at an even
position is reported as ``odd_mass``, not used). Then ``F``, ``F'_j``, Op and Imp follow the same formulas,
and the measured figures (exact world) are returned beside the self-estimated ones, computed on the same
histories with the same bootstrap resamples (so the errors ``op_self - op`` get paired intervals).

Where the model's world is wrong matters. A context ``h ⊕ (8 + a)`` is *natural* when ``a`` is the odd token
the sequence itself would write after ``h`` (``d(h[-16:])``, what pretraining and maintenance training show the
model) and *counterfactual* otherwise. The split-history future ``F'`` puts every history's outcome after
other histories' actions, so it consists almost entirely of counterfactual contexts. The world error is
reported on each kind (``world_kl_natural``, ``world_acc_natural``, ``world_kl_counterfactual``,
``world_acc_counterfactual``), and ``op_self_cf_true`` / ``imp_self_cf_true`` repeat the self-evaluation with the
true world put back on the counterfactual contexts only, which shows how much of the self-evaluation error
those contexts cause.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import rel_entr

from measures.api import child_rng, resolve_histories
from measures.baselines import baseline_name, check_baseline, reference_probs
from measures.intervals import bootstrap_interval
from measures.policies import Policy, action_probabilities, next_token_distribution
from measures.split import Draws, estimate, group_histories, jackknife
from measures.theory import imp_min
from seqenv.sequence import N_OUT, ORDER, VOCAB, deterministic_next, transition_probs
from seqenv.tasks import GoodSpec, good_mask, task_name
from seqenv.validation import check_int, check_optional_seed, check_temperature


@dataclass(frozen=True)
class SelfEvaluation:
    """Measured (exact world) and self-estimated (the model's world) figures side by side, in nats.

    :param op: measured Op.             :param op_self: Op with the model's predicted world.
    :param imp: measured Imp.           :param imp_self: Imp with the model's predicted world.
    :param success: measured ``s``.     :param success_self: ``s`` the model expects.
    :param baseline_success: measured ``s'``.   :param baseline_success_self: ``s'`` the model expects.
    :param imp_min: ``Imp_min(s, s')``. :param imp_min_self: ``Imp_min`` from the self-estimated rates.
    :param odd_mass: mean probability the model put on odd tokens 8..15 where an even token comes
        (dropped by the renormalisation).
    :param world_kl: ``mean_i sum_a pi(a|h_i) KL(T(.|h_i, a) || T_model(.|h_i, a))``: how wrong the model's
        world is on the actions it takes (nats).
    :param world_kl_natural: mean ``KL(T || T_model)`` on natural contexts (the action is the sequence's own
        odd token ``d(h[-16:])``), nats.
    :param world_kl_counterfactual: the same on counterfactual contexts (every other action, equally weighted).
    :param world_acc_natural: how often the model's most probable next even token is the world's
        deterministic one, on natural contexts (chance 1/8).
    :param world_acc_counterfactual: the same on counterfactual contexts.
    :param natural_share: mean probability the policy puts on the natural action of its own history.
    :param split_natural_share: the same for the split-history future (actions of other histories): the
        share of natural contexts among those ``F'`` is built from.
    :param op_self_cf_true: self-estimated Op with the true world on counterfactual contexts and the model's
        world on natural ones.
    :param imp_self_cf_true: the same for Imp.
    :param ci: BCa bootstrap intervals of every figure and of ``op_error = op_self - op`` and
        ``imp_error = imp_self - imp``.
    """

    op: float
    op_self: float
    imp: float
    imp_self: float
    success: float
    success_self: float
    baseline_success: float
    baseline_success_self: float
    imp_min: float
    imp_min_self: float
    odd_mass: float
    world_kl: float
    n: int
    task: str
    baseline: str
    temperature: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_resamples: int = 0
    ci_level: float = 0.95
    world_kl_natural: float = float("nan")
    world_kl_counterfactual: float = float("nan")
    world_acc_natural: float = float("nan")
    world_acc_counterfactual: float = float("nan")
    natural_share: float = float("nan")
    split_natural_share: float = float("nan")
    op_self_cf_true: float = float("nan")
    imp_self_cf_true: float = float("nan")

    @property
    def op_error(self) -> float:
        """``op_self - op``: negative when the model underestimates its own optimization."""
        return self.op_self - self.op

    @property
    def imp_error(self) -> float:
        """``imp_self - imp``."""
        return self.imp_self - self.imp

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = {k: [lo, hi] for k, (lo, hi) in self.ci.items()}
        d["op_error"], d["imp_error"] = self.op_error, self.imp_error
        return d


def model_world(model: Any, histories: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's world ``T_model[i, a, x]`` ``(N, 8, 8)`` (renormalised over 0..7) and its mean odd mass."""
    n = len(histories)
    ctx = np.empty((n, N_OUT, histories.shape[1]), dtype=np.int64)
    ctx[:, :, :-1] = histories[:, None, 1:]
    ctx[:, :, -1] = N_OUT + np.arange(N_OUT)
    probs = next_token_distribution(model, ctx.reshape(n * N_OUT, -1)).reshape(n, N_OUT, VOCAB)
    even = probs[..., :N_OUT]
    total = even.sum(axis=-1, keepdims=True)
    if (total <= 0).any():
        i, a = np.argwhere(total[..., 0] <= 0)[0]
        raise ValueError(f"the model puts no probability on tokens 0..7 after history {i} and action {a}")
    return even / total, float(1.0 - total.mean())


def _figures(d: Draws) -> dict[str, np.ndarray]:
    """Per-row figures of :func:`self_evaluate` from draws over the worlds ``[true, predicted]``."""
    figs = {
        "op": d.op[:, 0],
        "op_self": d.op[:, 1],
        "imp": d.imp[:, 0],
        "imp_self": d.imp[:, 1],
        "success": d.s[:, 0, 0],
        "success_self": d.s[:, 1, 0],
        "baseline_success": d.s_prime[:, 0, 0],
        "baseline_success_self": d.s_prime[:, 1, 0],
    }
    figs["imp_min"] = imp_min(np.clip(figs["success"], 0, 1), np.clip(figs["baseline_success"], 0, 1))
    figs["imp_min_self"] = imp_min(
        np.clip(figs["success_self"], 0, 1), np.clip(figs["baseline_success_self"], 0, 1)
    )
    figs["op_error"] = figs["op_self"] - figs["op"]
    figs["imp_error"] = figs["imp_self"] - figs["imp"]
    figs["op_self_cf_true"] = d.op[:, 2]
    figs["imp_self_cf_true"] = d.imp[:, 2]
    return figs


def natural_contexts(histories: np.ndarray) -> np.ndarray:
    """``(N, 8)`` bool: action ``a`` after history ``i`` is the sequence's own odd token ``d(h_i[-16:])``."""
    d = deterministic_next(histories[:, -ORDER:]).astype(np.intp)
    mask = np.zeros((len(histories), N_OUT), dtype=bool)
    mask[np.arange(len(histories)), d] = True
    return mask


def world_errors(
    true_world: np.ndarray, predicted: np.ndarray, natural: np.ndarray, pi: np.ndarray
) -> dict[str, float]:
    """How wrong ``predicted`` ``(N, 8, 8)`` is, on natural and on counterfactual contexts, and how much of the
    policy's own and split futures are natural contexts (see :class:`SelfEvaluation`)."""
    kl = rel_entr(true_world, predicted).sum(axis=-1)  # (N, 8): per history and action
    hit = predicted.argmax(axis=-1) == true_world.argmax(axis=-1)
    cf = ~natural
    return {
        "world_kl_natural": float(kl[natural].mean()),
        "world_kl_counterfactual": float(kl[cf].mean()),
        "world_acc_natural": float(hit[natural].mean()),
        "world_acc_counterfactual": float(hit[cf].mean()),
        "natural_share": float((pi * natural).sum(axis=1).mean()),
        "split_natural_share": float((pi.mean(axis=0)[None] * natural).sum(axis=1).mean()),
    }


def self_evaluate(
    model: Any,
    task: GoodSpec = "ngood4",
    histories: Any = None,
    n_histories: int = 4096,
    seed: int | None = 0,
    baseline: Any = "split",
    temperature: float = 0.0,
    *,
    policy: Policy | None = None,
    token: int | None = None,
    n_bootstrap: int = 1000,
    ci_level: float = 0.95,
) -> SelfEvaluation:
    """Self-estimated Op and Imp of a model that both acts and predicts, beside the measured ones.

    :param model: predicts the next token: ``next_token_probs(contexts)`` or a torch module with 16 logits,
        or a :class:`~measures.policies.CachedPolicy` of one, which shares its forward passes with the other
        measures given it (the policy's on the histories, the model's on the ``8 N`` contexts).
    :param task: task id or custom good set.
    :param histories: explicit ``(N, 20)`` natural histories, or ``None`` to draw ``n_histories`` with ``seed``.
    :param baseline: as for :func:`measures.measure`; a reference future is also built in the model's world.
    :param temperature: of the policy (0 = greedy).
    :param policy: the acting policy if it is not ``model`` itself (default: ``model``, whose odd-token
        logits 8..15 or ``action_probs`` give the actions).
    :param n_bootstrap: bootstrap resamples for ``ci`` (0 for none).
    """
    t = check_temperature(temperature)
    check_baseline(baseline, token)
    check_optional_seed(seed)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", 0)
    h = resolve_histories(histories, n_histories, seed)
    pi = action_probabilities(model if policy is None else policy, h, t)
    rho = reference_probs(baseline, h, t, token)
    true_world = transition_probs(h)
    predicted, odd_mass = model_world(model, h)
    natural = natural_contexts(h)
    repaired = np.where(
        natural[..., None], predicted, true_world
    )  # the true world on counterfactual contexts
    mask = good_mask(task).astype(np.float64)[None]
    worlds = [true_world, predicted, repaired]
    g = group_histories(pi, worlds, rho) if n_bootstrap > 0 else None
    figs = _figures(estimate(pi, worlds, rho, mask, n_bootstrap, child_rng(seed, 1), groups=g))
    ci = {}
    if n_bootstrap >= 2:
        jd, jack_weights = jackknife(g, mask, child_rng(seed, 3))
        jack = _figures(jd)
        for name, v in figs.items():
            iv = bootstrap_interval(v[0], v[1:], jack[name], jack_weights, ci_level)  # BCa or its fallback
            ci[name] = (float(iv.lo), float(iv.hi))
    world_kl = float(np.einsum("na,na->", pi, rel_entr(true_world, predicted).sum(axis=-1)) / len(h))
    return SelfEvaluation(
        **{k: float(v[0]) for k, v in figs.items() if k not in ("op_error", "imp_error")},
        **world_errors(true_world, predicted, natural, pi),
        odd_mass=odd_mass,
        world_kl=world_kl,
        n=len(h),
        task=task_name(task),
        baseline=baseline_name(baseline, token),
        temperature=t,
        ci=ci,
        n_resamples=n_bootstrap,
        ci_level=ci_level,
    )
