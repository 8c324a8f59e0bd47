"""agents: the post's transformer, its training, reference policies and loading.

``agents.load(path)`` returns a policy that ``measures.measure`` accepts and that has SB3-style ``predict``.
Train with ``agents.pretrain.pretrain`` and ``agents.finetune.finetune``; their configs and the reference
policies are also served here, loaded on first use (``agents.PretrainConfig``, ``agents.OraclePolicy``, ...).
"""

import importlib
from typing import Any

from agents.checkpoint import CheckpointError, load_model, save_checkpoint
from agents.policy import AgentPolicy, load
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters

#: names served lazily (their modules import pandas, gymnasium and tqdm), by module
_LAZY = {
    "agents.pretrain": ("PretrainConfig",),
    "agents.finetune": ("FinetuneConfig",),
    "agents.reference": ("NaturalPolicy", "OraclePolicy", "UniformPolicy"),
}


def __getattr__(name: str) -> Any:
    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


__all__ = [
    "SIZES",
    "AgentPolicy",
    "CheckpointError",
    "FinetuneConfig",
    "NaturalPolicy",
    "OraclePolicy",
    "PretrainConfig",
    "SplitSeqTransformer",
    "TransformerConfig",
    "UniformPolicy",
    "count_parameters",
    "load",
    "load_model",
    "save_checkpoint",
]
