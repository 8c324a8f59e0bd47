"""agents: the post's transformer, its training, reference policies and loading.

``agents.load(path)`` returns a policy that ``measures.measure`` accepts and that has SB3-style ``predict``
(the protocol: :class:`agents.policy.Policy`; the shared ``predict``: :class:`agents.policy.PolicyBase`).
Train with ``agents.pretrain.pretrain`` and ``agents.finetune.finetune``; their configs, the reference
policies and the :mod:`agents.reference` module are also served here, loaded on first use
(``agents.PretrainConfig``, ``agents.OraclePolicy``, ``agents.reference``, ...).

Layers, bottom up: :mod:`agents.transformer`, :mod:`agents.checkpoint`, :mod:`agents.policy`, then the
policies built on it (:mod:`agents.reference`, :mod:`agents.sb3`), then :mod:`agents.loading`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers; at run time every name is served on first use
    from agents.checkpoint import CheckpointError, convert_checkpoint, load_model, save_checkpoint
    from agents.finetune import FinetuneConfig
    from agents.loading import load
    from agents.policy import AgentPolicy, Policy, PolicyBase
    from agents.pretrain import PretrainConfig
    from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
    from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters

#: names served on first use, by module: ``import agents`` itself imports nothing heavy (torch, pandas), so
#: the ``splitseq`` command can take over Ctrl-C before its imports start
_LAZY = {
    "agents.checkpoint": ("CheckpointError", "convert_checkpoint", "load_model", "save_checkpoint"),
    "agents.loading": ("load",),
    "agents.policy": ("AgentPolicy", "Policy", "PolicyBase"),
    "agents.transformer": ("SIZES", "SplitSeqTransformer", "TransformerConfig", "count_parameters"),
    "agents.pretrain": ("PretrainConfig",),
    "agents.finetune": ("FinetuneConfig",),
    "agents.reference": ("NaturalPolicy", "OraclePolicy", "UniformPolicy"),
}
_OWNER = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _OWNER:
        value = getattr(importlib.import_module(_OWNER[name]), name)
        globals()[name] = value  # served once
        return value
    # a submodule as an attribute (``agents.reference`` after ``import agents``)
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"agents.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"agents.{name}":
                raise
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNER))


__all__ = [
    "SIZES",
    "AgentPolicy",
    "CheckpointError",
    "convert_checkpoint",
    "FinetuneConfig",
    "NaturalPolicy",
    "OraclePolicy",
    "Policy",
    "PolicyBase",
    "PretrainConfig",
    "SplitSeqTransformer",
    "TransformerConfig",
    "UniformPolicy",
    "count_parameters",
    "load",
    "load_model",
    "save_checkpoint",
]
