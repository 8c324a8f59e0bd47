"""Differential Op and Imp from Jacobians (post, Appendix A; docs/spec.md §4).

For a system ``A = f(P)``, ``F = g(A, P)``, ``h(P) = g(f(P), P)``, at a point ``p``:

* ``J_g = dg/dP`` with ``A`` held fixed, ``J_h = dh/dP`` with ``A`` varying (following the derivation in
  Appendix B; the post's one-line summary swaps the two names). Shapes ``(dim F, dim P)``.
* square (``dim F = dim P``), ``C = J_g^{-1} J_h``::

      Op  = -ln|det C| = ln|det J_g| - ln|det J_h|
      Imp = -ln|det C| + Tr(C C^T) - Tr(C)

* general (``dim F <= dim P``, ``J_g J_g^T`` invertible)::

      Op  = 1/2 ln|J_g J_g^T| - 1/2 ln|J_h J_h^T|
      Imp = Op + Tr(J_h J_h^T (J_g J_g^T)^{-1}) - Tr(J_g J_h^T (J_g J_g^T)^{-1})

Both forms agree when both apply. Determinants go through ``slogdet`` and inverses through ``solve``;
a singular or ill-shaped Jacobian raises ``ValueError`` naming the matrix.

Check: ``A = P``, ``F = P - (1 - k) A`` gives ``C = k``, ``Op = -ln k``, ``Imp = -ln k + k(k - 1)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

FORMS = ("auto", "square", "general")
_COND_LIMIT = 1.0 / np.finfo(np.float64).eps  # beyond this a matrix is singular to working precision


def _matrix(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(
            f"{name} must be a non-empty matrix (dim F, dim P) or a scalar, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds a non-finite entry {float(arr[~np.isfinite(arr)][0])}")
    return arr


def _pair(j_g: Any, j_h: Any, form: str) -> tuple[np.ndarray, np.ndarray, str]:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {list(FORMS)}")
    g, h = _matrix(j_g, "J_g"), _matrix(j_h, "J_h")
    if g.shape != h.shape:
        raise ValueError(f"J_g and J_h must have the same shape (dim F, dim P), got {g.shape} and {h.shape}")
    m, n = g.shape
    if form == "auto":
        form = "square" if m == n else "general"
    if form == "square" and m != n:
        raise ValueError(f"the square form needs dim F = dim P, got Jacobians of shape {g.shape}")
    if form == "general" and m > n:
        raise ValueError(
            f"J_g J_g^T is singular when dim F > dim P (Jacobians of shape {g.shape}): F has more "
            "dimensions than P can move; no differential measure exists"
        )
    return g, h, form


def _logabsdet(mat: np.ndarray, name: str) -> float:
    sign, logdet = np.linalg.slogdet(mat)
    if sign == 0 or not np.isfinite(logdet) or np.linalg.cond(mat) > _COND_LIMIT:
        raise ValueError(
            f"{name} is singular (condition number {np.linalg.cond(mat):.3g}); Op and Imp are undefined"
        )
    return float(logdet)


def _op(g: np.ndarray, h: np.ndarray, form: str) -> float:
    if form == "square":
        return _logabsdet(g, "J_g") - _logabsdet(h, "J_h")
    return 0.5 * _logabsdet(g @ g.T, "J_g J_g^T") - 0.5 * _logabsdet(h @ h.T, "J_h J_h^T")


def op(j_g: Any, j_h: Any, form: str = "auto") -> float:
    """Differential optimization ``-ln|det C|`` (square) or ``1/2 ln|J_g J_g^T| - 1/2 ln|J_h J_h^T|``.

    :param j_g: ``dF/dP`` with ``A`` held fixed, shape ``(dim F, dim P)`` (a scalar for 1-D systems).
    :param j_h: ``dF/dP`` with ``A`` varying, same shape.
    :param form: ``"auto"`` (square when ``dim F = dim P``), ``"square"`` or ``"general"``.
    :return: nats.
    """
    g, h, form = _pair(j_g, j_h, form)
    return _op(g, h, form)


def imp(j_g: Any, j_h: Any, form: str = "auto") -> float:
    """Differential impact ``-ln|det C| + Tr(C C^T) - Tr(C)`` (square) or its general form (module docstring).

    :param j_g: ``dF/dP`` with ``A`` held fixed, shape ``(dim F, dim P)``.
    :param j_h: ``dF/dP`` with ``A`` varying, same shape.
    :param form: ``"auto"``, ``"square"`` or ``"general"``.
    :return: nats.
    """
    g, h, form = _pair(j_g, j_h, form)
    op_value = _op(g, h, form)
    if form == "square":
        c = np.linalg.solve(g, h)
        return op_value + float(np.sum(c * c)) - float(np.trace(c))
    gg = g @ g.T
    return (
        op_value
        + float(np.trace(np.linalg.solve(gg, h @ h.T)))
        - float(np.trace(np.linalg.solve(gg, g @ h.T)))
    )


def optimization_ratio(j_g: Any, j_h: Any) -> np.ndarray:
    """``C = J_g^{-1} J_h`` for square Jacobians (``C < 1`` in 1-D when ``A`` damps the effect of ``P`` on ``F``)."""
    g, h, _ = _pair(j_g, j_h, "square")
    _logabsdet(g, "J_g")
    return np.linalg.solve(g, h)


class Jacobians(NamedTuple):
    """``J_g`` (``A`` held fixed) and ``J_h`` (``A`` varying), float64 ``(dim F, dim P)`` arrays."""

    j_g: np.ndarray
    j_h: np.ndarray


def jacobians(
    f: Callable[[torch.Tensor], torch.Tensor],
    g: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    p: Any,
    mode: str = "rev",
) -> Jacobians:
    """Build ``J_g = dg(A, P)/dP`` at ``A = f(p)`` held fixed and ``J_h = d g(f(P), P)/dP`` with ``torch.func``.

    :param f: ``P -> A`` (torch-differentiable).
    :param g: ``(A, P) -> F``.
    :param p: the point, a scalar or tensor of any shape (flattened to ``dim P``); computed in float64.
    :param mode: ``"rev"`` (``torch.func.jacrev``, cheaper when dim F < dim P) or ``"fwd"`` (``jacfwd``).
    :return: :class:`Jacobians` of shape ``(dim F, dim P)``.
    """
    if mode not in ("rev", "fwd"):
        raise ValueError(f"unknown mode {mode!r}; expected 'rev' or 'fwd'")
    jac = torch.func.jacrev if mode == "rev" else torch.func.jacfwd
    p = torch.as_tensor(p, dtype=torch.float64).detach()
    a = f(p).detach()
    with warnings.catch_warnings():
        # torch's forward-mode AD scripts a helper with torch.jit.script on use, which warns about its own
        # deprecation: nothing a caller of this function can act on
        warnings.filterwarnings(
            "ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning
        )
        j_g = jac(lambda q: g(a, q))(p)
        j_h = jac(lambda q: g(f(q), q))(p)
    n_p = p.numel()
    return Jacobians(
        j_g.reshape(-1, n_p).detach().cpu().numpy().astype(np.float64),
        j_h.reshape(-1, n_p).detach().cpu().numpy().astype(np.float64),
    )


def differential(
    f: Callable[[torch.Tensor], torch.Tensor],
    g: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    p: Any,
    form: str = "auto",
) -> dict[str, float]:
    """``{"op": ..., "imp": ...}`` of the system ``A = f(P)``, ``F = g(A, P)`` at ``p`` (Jacobians by torch.func)."""
    j = jacobians(f, g, p)
    return {"op": op(j.j_g, j.j_h, form), "imp": imp(j.j_g, j.j_h, form)}
