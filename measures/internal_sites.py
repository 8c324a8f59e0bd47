"""What :mod:`measures.internal` needs of a model, and the Jacobians ``dF/dP`` at its internal sites.

**The protocol** (:class:`InternalModel`, structural: ``measures`` imports no model code). A torch module with

* ``internal_sites() -> list[str]``: the names of the sites that can be read or replaced;
* ``input_embeddings(idx) -> (B, T, C)``: the input ``P`` of ``(B, T)`` token ids (for the SplitSeq
  transformer: token plus position embeddings, before dropout);
* ``logits_from_embeddings(emb, edits=None) -> (B, 16)``: the next-token logits from ``emb``, where
  ``edits = {site: fn}`` replaces the site's value ``a`` ``(B, C)`` by ``fn(a)``. Row ``b`` of the output
  must depend on row ``b`` of ``emb`` only (true of any model in eval mode without batch statistics).

:class:`agents.transformer.SplitSeqTransformer` implements it, with sites ``block{l}.attn`` and
``block{l}.mlp`` (what the sublayer adds to the residual stream) and ``block{l}.resid`` (the stream after
block ``l``, below the last block), all **at the read-out (last) position only**: the other positions, which
later attention layers read, stay live. :func:`as_internal_model` also finds the module behind an
``agents.load(...)`` policy (its ``.model``) or an SB3 policy / PPO model (its ``.policy``).

**The output** ``F``: 8 logits, centred (their log-softmax differs from them by a constant, so centring
removes the softmax normalisation), then written in an orthonormal basis of the zero-sum subspace
(:func:`zero_sum_basis`): 7 coordinates. Determinants and traces of :mod:`measures.differential`'s general
form do not depend on which orthonormal basis is used. ``output="policy"``: the odd-token logits 8..15 of
the history. ``output="world"``: the even-token logits 0..7 (the model's predicted next even token) after its
greedy action, on the context ``h[1:] + [8 + a]`` that :mod:`measures.self_eval` builds; ``P`` is still the
history's embedding (rows 1..19 move to positions 0..18, with the position embeddings swapped for the
context's; the action token is held fixed, as the greedy action is piecewise constant in ``P``), and the
sites are those of the forward pass on that context.

**The Jacobians** (:func:`site_jacobians`): ``J_h = dF/dP`` and, per site, ``J_g = dF/dP`` with the site
replaced by a constant equal to its value at that history, each by one ``torch.func.vjp`` per output
coordinate, batched over histories: as histories do not interact, the vjp of the batch sum ``sum_b F_b`` gives
every history's row at once. (``torch.func.vmap`` over histories also works but ran 4x slower on CPU:
``scaled_dot_product_attention`` has no batching rule in torch 2.13, so vmap falls back to a per-history
loop; ``jacrev`` over the 7 coordinates, 1.5x slower, for the same reason.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from seqenv.sequence import N_OUT

OUTPUTS = ("policy", "world")  #: what ``F`` reads: the action logits, or the next even token after the action
DIM_F = N_OUT - 1  #: coordinates of the centred 8 logits


@runtime_checkable
class InternalModel(Protocol):
    """A model whose internal sites :func:`measures.internal.site_measures` can read and replace (module docstring)."""

    def internal_sites(self) -> list[str]:
        """Names of the sites."""
        ...

    def input_embeddings(self, idx: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` input embeddings of ``(B, T)`` token ids."""
        ...

    def logits_from_embeddings(
        self,
        emb: torch.Tensor,
        edits: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """``(B, 16)`` next-token logits from embeddings, each site in ``edits`` replaced by ``edit(value)``."""
        ...


def as_internal_model(model: Any) -> torch.nn.Module:
    """The torch module implementing :class:`InternalModel` in ``model``, its ``.model`` or its ``.policy``.

    :raises TypeError: nothing there implements the protocol.
    """
    for candidate in (model, getattr(model, "model", None), getattr(model, "policy", None)):
        if isinstance(candidate, torch.nn.Module) and isinstance(candidate, InternalModel):
            return candidate
    raise TypeError(
        f"cannot read the internal sites of {type(model).__name__}: expected a torch module with "
        "internal_sites(), input_embeddings(idx) and logits_from_embeddings(emb, edits) (a SplitSeqTransformer, "
        "an agents.load(...) policy, an SB3 TransformerPolicy or a PPO model using one)"
    )


def check_sites(net: torch.nn.Module, sites: Any) -> list[str]:
    """``sites`` as a list of distinct site names of ``net`` (``None``: all of them, in the model's order)."""
    valid = list(net.internal_sites())
    if sites is None:
        return valid
    names = [sites] if isinstance(sites, str) else sites
    if not isinstance(names, Sequence) or not names:
        raise ValueError(f"sites must be None, a site name or a non-empty list of them; got {sites!r}")
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown site {name!r}; this model's sites are {valid}")
    if len(set(names)) != len(names):
        twice = next(n for n in names if list(names).count(n) > 1)
        raise ValueError(f"site {twice!r} is listed twice in sites={list(names)}")
    return list(names)


def zero_sum_basis(n: int = N_OUT) -> np.ndarray:
    """``(n, n - 1)`` orthonormal basis of the vectors summing to zero (normalised Helmert contrasts)."""
    q = np.zeros((n, n - 1))
    for j in range(1, n):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= np.sqrt(j * (j + 1.0))
    return q


class SiteJacobians(NamedTuple):
    """``J_h`` ``(B, 7, dim P)``, ``J_g`` per site (same shape), and the greedy actions (``output="world"``)."""

    j_h: torch.Tensor
    j_g: dict[str, torch.Tensor]
    actions: torch.Tensor | None


def _record(store: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def edit(a: torch.Tensor) -> torch.Tensor:
        store[name] = a
        return a

    return edit


def _constant(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda a: value


def site_jacobians(
    net: torch.nn.Module, tokens: torch.Tensor, sites: Sequence[str], output: str = "policy"
) -> SiteJacobians:
    """``J_h`` and every site's ``J_g`` for a batch of histories (module docstring).

    :param net: an :class:`InternalModel` in eval mode.
    :param tokens: ``(B, T)`` int64 token ids on ``net``'s device.
    :param sites: site names (validated by the caller).
    :param output: one of :data:`OUTPUTS`.
    :return: :class:`SiteJacobians` in ``net``'s dtype, ``dim P = T * C``.
    """
    with torch.no_grad():
        emb = net.input_embeddings(tokens)  # (B, T, C)
        actions = None
        if output == "world":
            actions = net.logits_from_embeddings(emb)[:, N_OUT:].argmax(dim=-1)  # greedy, ties to the lowest
            ctx = net.input_embeddings(torch.cat([tokens[:, 1:], (N_OUT + actions)[:, None]], dim=1))
            offset, last = ctx[:, :-1] - emb[:, 1:], ctx[:, -1:]  # (B, T-1, C), (B, 1, C)

            def prepare(p: torch.Tensor) -> torch.Tensor:
                return torch.cat([p[:, 1:] + offset, last], dim=1)

            cols = slice(0, N_OUT)
        else:

            def prepare(p: torch.Tensor) -> torch.Tensor:
                return p

            cols = slice(N_OUT, 2 * N_OUT)
        values: dict[str, torch.Tensor] = {}
        net.logits_from_embeddings(prepare(emb), {s: _record(values, s) for s in sites})
    basis = torch.as_tensor(zero_sum_basis(), dtype=emb.dtype, device=emb.device)  # (8, 7)
    eye = torch.eye(DIM_F, dtype=emb.dtype, device=emb.device)
    b = len(tokens)

    def jacobian(edits: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None) -> torch.Tensor:
        def total(p: torch.Tensor) -> torch.Tensor:
            return (net.logits_from_embeddings(prepare(p), edits)[:, cols] @ basis).sum(dim=0)  # (7,)

        with torch.enable_grad():
            _, vjp_fn = torch.func.vjp(total, emb)
            rows = [vjp_fn(eye[k])[0].reshape(b, -1) for k in range(DIM_F)]  # (B, T*C) each
        return torch.stack(rows, dim=1)  # (B, 7, T*C)

    j_g = {s: jacobian({s: _constant(values[s])}) for s in sites}
    return SiteJacobians(jacobian(None), j_g, actions)
