"""Differential Op and Imp (post, Appendix A; docs/spec.md §4) on a transformer's own activations.

For one history ``h`` and one internal site ``A`` of the model (docs/internal.md):

* ``P``: the input, the token plus position embeddings of the 20-token context, flattened (``20 C`` dims);
* ``A``: the site at the read-out (last) position: what ``block{l}.attn`` or ``block{l}.mlp`` adds to the
  residual stream, or the stream ``block{l}.resid`` after block ``l`` (below the last block);
* ``F``: the 8 odd-token logits (``output="policy"``) or the 8 even-token logits after the greedy action
  (``output="world"``), centred and written in an orthonormal basis of the zero-sum subspace: 7 dims
  (:mod:`measures.internal_sites`);
* ``J_h = dF/dP`` (the network as it is) and ``J_g = dF/dP`` with ``A`` replaced by a constant equal to its
  value at ``h``, so that only the paths bypassing the site remain;
* :mod:`measures.differential`'s general form, in float64::

      Op  = 1/2 ln|J_g J_g^T| - 1/2 ln|J_h J_h^T|
      Imp = Op + Tr(J_h J_h^T (J_g J_g^T)^{-1}) - Tr(J_g J_h^T (J_g J_g^T)^{-1})

>>> df = site_measures(agents.load("large.pt"), natural_histories(1024, seed=0))
>>> df.groupby("site")[["op", "imp"]].mean()
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from measures.internal_sites import (
    DIM_F,
    OUTPUTS,
    InternalModel,
    SiteJacobians,
    as_internal_model,
    check_sites,
    site_jacobians,
    zero_sum_basis,
)
from seqenv.sequence import validate_histories
from seqenv.validation import check_choice, check_positive_int

#: beyond this condition number ``J_g J_g^T`` is singular to working precision (as in measures.differential)
COND_LIMIT = 1.0 / np.finfo(np.float64).eps
BATCH_SIZE = 256  #: histories per batch of Jacobians (memory grows as batch x sites x 7 x 20 C)

#: the columns of :func:`site_measures`, beside ``history`` and ``site``
TERMS = ("op", "imp", "half_logdet_g", "half_logdet_h", "trace_hh", "trace_gh", "cond_g", "singular")


def general_terms(j_g: Any, j_h: Any) -> dict[str, np.ndarray]:
    """Op, Imp and the terms behind them for stacks of Jacobians, in float64.

    :mod:`measures.differential`'s general form (``differential.op`` / ``differential.imp`` with
    ``form="general"``), vectorised over histories, with the singular case reported instead of raised.

    :param j_g: ``(N, dim F, dim P)``, ``A`` held fixed (``dim F <= dim P``).
    :param j_h: ``(N, dim F, dim P)``, ``A`` varying.
    :return: arrays ``(N,)``: ``half_logdet_g = 1/2 ln|J_g J_g^T|``, ``half_logdet_h``,
        ``trace_hh = Tr(J_h J_h^T (J_g J_g^T)^-1)``, ``trace_gh = Tr(J_g J_h^T (J_g J_g^T)^-1)``, ``cond_g``
        (condition number of ``J_g J_g^T``), ``singular`` (``J_g J_g^T`` or ``J_h J_h^T`` singular to float64
        precision, as ``measures.differential`` decides: then ``op`` and ``imp`` are NaN), ``op``, ``imp``.
    """
    g, h = _side(j_g, "J_g"), _side(j_h, "J_h")
    if g.j.shape != h.j.shape:
        raise ValueError(f"J_g and J_h must have the same shape, got {g.j.shape} and {h.j.shape}")
    return _terms(g, h)


class _Side(NamedTuple):
    """One stack of Jacobians in float64 with its transpose (a copy), Gram matrix and the Gram's log-det."""

    j: np.ndarray
    jt: np.ndarray
    gram: np.ndarray
    sign: np.ndarray
    logdet: np.ndarray
    singular: np.ndarray


def _side(x: Any, name: str) -> _Side:
    j = _stack(x, name)
    if j.shape[1] > j.shape[2]:
        raise ValueError(f"the general form needs dim F <= dim P, got Jacobians of shape {j.shape[1:]}")
    # the transpose as a copy: numpy computes ``a @ a.T`` of one buffer by another routine than ``a @ b.T``,
    # which would make J_g J_h^T differ from J_g J_g^T in the last bit even when J_g == J_h (Op, Imp exactly 0)
    jt = np.ascontiguousarray(np.swapaxes(j, 1, 2))
    gram = j @ jt  # (N, m, m)
    sign, logdet = np.linalg.slogdet(gram)
    singular = (sign == 0) | ~np.isfinite(logdet) | (np.linalg.cond(gram) > COND_LIMIT)
    return _Side(j, jt, gram, sign, logdet, singular)


def _terms(g: _Side, h: _Side) -> dict[str, np.ndarray]:
    cond_g = np.linalg.cond(g.gram)
    singular = g.singular | h.singular
    safe = np.where(singular[:, None, None], np.eye(g.gram.shape[1]), g.gram)  # solve() raises if singular
    trace_hh = np.trace(np.linalg.solve(safe, h.gram), axis1=1, axis2=2)
    trace_gh = np.trace(np.linalg.solve(safe, g.j @ h.jt), axis1=1, axis2=2)
    with np.errstate(invalid="ignore"):  # -inf - -inf where both are singular
        op = np.where(singular, np.nan, 0.5 * g.logdet - 0.5 * h.logdet)
    return {
        "op": op,
        "imp": np.where(singular, np.nan, op + trace_hh - trace_gh),
        "half_logdet_g": np.where(g.sign > 0, 0.5 * g.logdet, np.nan),
        "half_logdet_h": np.where(h.sign > 0, 0.5 * h.logdet, np.nan),
        "trace_hh": np.where(singular, np.nan, trace_hh),
        "trace_gh": np.where(singular, np.nan, trace_gh),
        "cond_g": cond_g,
        "singular": singular,
    }


def _stack(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty stack (N, dim F, dim P), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds a non-finite entry {float(arr[~np.isfinite(arr)][0])}")
    return arr


def check_site_histories(histories: Any) -> np.ndarray:
    """``(N, 20)`` natural histories (``N >= 1``) as int64, or an error naming the problem."""
    h = validate_histories(histories)
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"histories must have shape (N, 20) with N >= 1, got {h.shape}")
    return h


def site_measures(
    model: Any,
    histories: Any,
    sites: str | list[str] | None = None,
    output: str = "policy",
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """Internal differential Op and Imp of every (history, site) of a model (module docstring).

    :param model: an :class:`~measures.internal_sites.InternalModel` (a ``SplitSeqTransformer``), anything
        holding one as ``.model`` (``agents.load("x.pt")``) or ``.policy`` (``agents.load("x.zip")``, PPO).
    :param histories: ``(N, 20)`` natural histories.
    :param sites: a site name, a list of them, or ``None`` for every site (``model.internal_sites()``).
    :param output: ``"policy"`` (the action logits) or ``"world"`` (the next even token after the greedy
        action).
    :param batch_size: histories per batch of Jacobians (results do not depend on it beyond rounding).
    :return: one row per (history, site), history-major: ``history`` (row of ``histories``), ``site``,
        :data:`TERMS`, and for ``output="world"`` the greedy ``action``. ``df.attrs`` holds ``output``,
        ``dim_f`` (7) and ``dim_p``. The model runs in eval mode on its own device and dtype (pass a float64
        copy for float64 Jacobians); its training flag is restored afterwards.
    """
    h = check_site_histories(histories)
    output = check_choice(output, "output", OUTPUTS)
    batch_size = check_positive_int(batch_size, "batch_size")
    net = as_internal_model(model)
    names = check_sites(net, sites)
    try:
        device = next(net.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = net.training
    net.eval()
    parts: list[dict[str, np.ndarray]] = []
    actions: list[np.ndarray] = []
    dim_p = 0
    try:
        for start in range(0, len(h), batch_size):
            tokens = torch.from_numpy(h[start : start + batch_size]).to(device)
            jac = site_jacobians(net, tokens, names, output)
            dim_p = jac.j_h.shape[-1]
            parts.append(site_terms(jac, names))
            if jac.actions is not None:
                actions.append(jac.actions.cpu().numpy())
    finally:
        net.train(was_training)
    n, s = len(h), len(names)
    table = {
        "history": np.repeat(np.arange(n), s),
        "site": np.tile(np.array(names, dtype=object), n),
    }
    for key in TERMS:
        table[key] = np.concatenate([p[key] for p in parts]).reshape(-1)  # (N, S) -> history-major rows
    if output == "world":
        table["action"] = np.repeat(np.concatenate(actions), s)
    df = pd.DataFrame(table)
    df.attrs.update(output=output, dim_f=DIM_F, dim_p=dim_p)
    return df


def site_terms(jac: SiteJacobians, names: list[str]) -> dict[str, np.ndarray]:
    """:func:`general_terms` of every site of :func:`~measures.internal_sites.site_jacobians`, ``(B, S)`` arrays."""
    h = _side(jac.j_h, "J_h")  # shared by every site
    per_site = [_terms(_side(jac.j_g[s], f"J_g of site {s!r}"), h) for s in names]
    return {key: np.stack([t[key] for t in per_site], axis=1) for key in TERMS}


__all__ = [
    "BATCH_SIZE",
    "InternalModel",
    "OUTPUTS",
    "TERMS",
    "as_internal_model",
    "general_terms",
    "site_jacobians",
    "site_measures",
    "site_terms",
    "zero_sum_basis",
]
