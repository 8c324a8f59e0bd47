"""Comparison futures ``F'`` (docs/spec.md §4, the post's "family of measures").

* ``"split"`` (default): the split history — action from ``h_j``, world from ``h_i`` — one ``F'_j`` per
  history; ``Op = mean_j H(F'_j) - H(F)``, ``Imp = mean_j KL(F || F'_j)``.
* every other baseline is a single reference future ``F' = mean_i sum_a rho(a|h_i) T(.|h_i, a)``, the
  future a reference policy ``rho`` makes on the same histories; ``Op = H(F') - H(F)``, ``Imp = KL(F || F')``:

  - ``"random"``: ``rho`` uniform on the 8 odd tokens;
  - ``"fixed"`` with ``token=`` (an odd token 8..15): ``rho`` always writes that token (the "do nothing" output);
  - ``"natural"``: the sequence's own odd token. Convention: ``rho(.|h)`` is the generator's exact
    distribution of the odd token after ``h``, ``0.98 * onehot(d) + 0.02 / 8`` with ``d`` the deterministic
    value of the last 16 tokens of ``h`` (noise included, never its greedy value;
    :func:`seqenv.sequence.natural_odd_probs`), so ``F'`` is the natural distribution of ``s_{t+1}``;
  - a policy object (anything :func:`measures.policies.action_probabilities` accepts, e.g. the pretrained
    model): ``rho`` is its action distribution at the same temperature as the measured policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from measures.policies import action_probabilities
from seqenv.sequence import N_OUT, natural_odd_probs
from seqenv.validation import check_int

BASELINES = ("split", "random", "fixed", "natural")


#: ``rho`` of ``baseline="natural"``: the sequence's own law of the odd token, ``(N, 8)`` action probabilities
#: (one definition, :func:`seqenv.sequence.natural_odd_probs`; this name is kept for ``measures``' users).
natural_action_probs = natural_odd_probs


def baseline_name(baseline: Any, token: int | None = None) -> str:
    """A short readable name for a baseline spec (``"split"``, ``"fixed:11"``, ``"policy:AgentPolicy"``)."""
    if isinstance(baseline, str):
        return f"fixed:{token}" if baseline == "fixed" else baseline
    return f"policy:{getattr(baseline, '__name__', None) or type(baseline).__name__}"


def check_baseline(baseline: Any, token: int | None) -> None:
    """Validate a baseline spec and its ``token=`` before any work is done."""
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"unknown baseline {baseline!r}; expected one of {list(BASELINES)} or a reference policy object"
            )
        if baseline == "fixed":
            if token is None:
                raise ValueError(
                    "baseline='fixed' needs token=: the odd token 8..15 taken as the 'do nothing' output"
                )
            check_int(
                token,
                "token",
                N_OUT,
                maximum=2 * N_OUT - 1,
                expected=f"an odd-position token in {N_OUT}..{2 * N_OUT - 1}",
            )
            return
    elif baseline is None:
        raise ValueError(f"baseline must be one of {list(BASELINES)} or a reference policy object, got None")
    if token is not None:
        raise ValueError(
            f"token={token!r} only applies to baseline='fixed', not baseline={baseline_name(baseline)!r}"
        )


def reference_probs(
    baseline: Any, histories: np.ndarray, temperature: float, token: int | None
) -> np.ndarray | None:
    """``rho`` ``(N, 8)`` of a single-future baseline, or ``None`` for the split history."""
    check_baseline(baseline, token)
    n = len(histories)
    if isinstance(baseline, str):
        if baseline == "split":
            return None
        if baseline == "random":
            return np.full((n, N_OUT), 1.0 / N_OUT)
        if baseline == "fixed":
            probs = np.zeros((n, N_OUT))
            probs[:, int(token) - N_OUT] = 1.0
            return probs
        return natural_odd_probs(histories)
    return action_probabilities(baseline, histories, temperature)
