"""SplitSeq: the mod-17 sequence of the research post and its Gymnasium environments.

``import seqenv`` registers ``SplitSeq-ngood2-v0``, ``SplitSeq-ngood4-v0``, ``SplitSeq-ngood6-v0`` and the
generic ``SplitSeq-v0`` (which takes ``good=``); ``gym.make("seqenv:SplitSeq-ngood4-v0")`` works without it.
"""

from __future__ import annotations

import gymnasium as gym

from seqenv.env import SplitSeqEnv
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    P_DET,
    P_MATCH,
    VOCAB,
    SequenceStreams,
    deterministic_next,
    generate_sequences,
    natural_histories,
    natural_odd_probs,
    next_deterministic,
    transition_probs,
    validate_histories,
)
from seqenv.tasks import TASKS, good_mask, good_set, task_name
from seqenv.vector import SplitSeqVectorEnv

__all__ = [
    "CONTEXT",
    "N_OUT",
    "P_DET",
    "P_MATCH",
    "TASKS",
    "VOCAB",
    "SequenceStreams",
    "SplitSeqEnv",
    "SplitSeqVectorEnv",
    "deterministic_next",
    "generate_sequences",
    "good_mask",
    "good_set",
    "natural_histories",
    "natural_odd_probs",
    "next_deterministic",
    "task_name",
    "transition_probs",
    "validate_histories",
]


def _register() -> None:
    entry, vector_entry = "seqenv.env:SplitSeqEnv", "seqenv.vector:SplitSeqVectorEnv"
    for task in TASKS:
        env_id = f"SplitSeq-{task}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, vector_entry_point=vector_entry, kwargs={"good": task})
    if "SplitSeq-v0" not in gym.registry:
        gym.register("SplitSeq-v0", entry_point=entry, vector_entry_point=vector_entry)


_register()
