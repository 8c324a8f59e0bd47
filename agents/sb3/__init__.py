"""The SplitSeq transformer as a Stable-Baselines3 policy, PPO on the native vector env, and loading SB3 zips.

``PPO(TransformerPolicy, env, policy_kwargs={"pretrained": "tiny.pt"})`` starts PPO from the pretrained
predictor: the policy's action logits *are* the language model's odd-token logits (rows 8..15 of
``model.head``), so before the first update the action distribution equals the model's next-token
distribution restricted to the odd tokens (softmax over logits 8..15). ``policy_kwargs={"size": "tiny"}``
starts from a freshly initialised transformer instead. :func:`train_ppo` does it all on
:func:`make_sb3_vec_env`'s native batched env; :func:`load_sb3` turns any SB3 zip with an actor-critic
policy on SplitSeq (PPO/A2C, ``TransformerPolicy`` or ``MlpPolicy``) into the project's policy protocol
(``action_probs``, ``predict``), which is what ``agents.load("x.zip")`` returns; :func:`as_policy` does the
same for a model in memory.

Split as Stable-Baselines3 splits itself; each module's docstring holds the design choices it implements
(each measured or argued):

* :mod:`agents.sb3.torch_layers`: :class:`TransformerExtractor` (token ids or SB3's one-hot in, the last
  position's features out), :func:`build_transformer`, :func:`tokens_from_observation`; why token ids and
  why dropout is off.
* :mod:`agents.sb3.policies`: :class:`TransformerPolicy`, :func:`action_logits`; why the heads sit straight
  on the transformer, the value head starting at zero.
* :mod:`agents.sb3.adapter`: :class:`SB3Policy`, :func:`as_policy` (the project's policy protocol).
* :mod:`agents.sb3.save_util`: :func:`load_sb3`, :func:`load_ppo`, :func:`export_checkpoint`; why zips
  stand alone.
* :mod:`agents.sb3.training`: :data:`PPO_DEFAULTS`, :class:`ExactSuccessCallback`, :func:`train_ppo`.
* :mod:`agents.sb3.vec_env`: :class:`SB3VecEnv`, :func:`make_sb3_vec_env` (SB3's ``VecEnv`` over the native
  batched env, one numpy call per step).

Every public name is served here, and must stay so: zips saved before this was a package pickle their policy
class as ``agents.sb3.TransformerPolicy`` (and an extractor as ``agents.sb3.TransformerExtractor``).
"""

from agents.sb3.adapter import SB3Policy, as_policy
from agents.sb3.policies import TransformerPolicy, action_logits
from agents.sb3.save_util import export_checkpoint, load_ppo, load_sb3
from agents.sb3.torch_layers import TransformerExtractor, build_transformer, tokens_from_observation
from agents.sb3.training import PPO_DEFAULTS, ExactSuccessCallback, train_ppo
from agents.sb3.vec_env import SB3VecEnv, make_sb3_vec_env

__all__ = [
    "PPO_DEFAULTS",
    "ExactSuccessCallback",
    "SB3Policy",
    "SB3VecEnv",
    "TransformerExtractor",
    "TransformerPolicy",
    "action_logits",
    "as_policy",
    "build_transformer",
    "export_checkpoint",
    "load_ppo",
    "load_sb3",
    "make_sb3_vec_env",
    "tokens_from_observation",
    "train_ppo",
]
