"""agents: the post's transformer, its training, reference policies and loading.

``agents.load(path)`` returns a policy that ``measures.measure`` accepts and that has SB3-style ``predict``.
"""

from agents.checkpoint import CheckpointError, load_model, save_checkpoint
from agents.policy import AgentPolicy, load
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters

__all__ = [
    "SIZES",
    "CheckpointError",
    "SplitSeqTransformer",
    "TransformerConfig",
    "AgentPolicy",
    "count_parameters",
    "load",
    "load_model",
    "save_checkpoint",
]
