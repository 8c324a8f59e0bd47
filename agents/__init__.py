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
from typing import Any

from agents.checkpoint import CheckpointError, convert_checkpoint, load_model, save_checkpoint
from agents.loading import load
from agents.policy import AgentPolicy, Policy, PolicyBase
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters

#: names served lazily (their modules import pandas, gymnasium and tqdm), by module
_LAZY = {
    "agents.pretrain": ("PretrainConfig",),
    "agents.finetune": ("FinetuneConfig",),
    "agents.reference": ("NaturalPolicy", "OraclePolicy", "UniformPolicy"),
}
#: submodules served lazily as attributes (``agents.reference`` after a bare ``import agents``)
_LAZY_MODULES = ("reference",)


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"agents.{name}")
    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


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
