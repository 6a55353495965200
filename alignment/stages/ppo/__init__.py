"""PPO with callable rewards: ``run_ppo(config, out_dir) -> out_dir/model``.

safealign's own trainer on transformers + accelerate (TRL 1.16 has none). Each iteration samples one
completion per prompt, scores it with a reward callable of TRL's signature, adds a per-token KL penalty
to the reference policy, estimates advantages with GAE and runs several epochs of clipped PPO updates.
The algorithm and every knob are described in ``docs/ppo.md``; the building blocks live in
:mod:`alignment.rl`. This package holds the stage around them:

- :mod:`~alignment.stages.ppo.config`: ``PPOStageConfig`` (the recipe keys);
- :mod:`~alignment.stages.ppo.models`: policy + value head, reference policy, rollout collection;
- :mod:`~alignment.stages.ppo.trainer`: the loop (``PPOTrainer``) with its guards;
- :mod:`~alignment.stages.ppo.checkpoint`, :mod:`~alignment.stages.ppo.display`: checkpoints, live table;
- :mod:`~alignment.stages.ppo.stage`: ``run_ppo`` (run directory, ``stage.json``, skip/resume/force).

The run directory has the layout of the other stages (``stage.json``, ``manifest.json``,
``checkpoints/checkpoint-N``, ``model/``) plus ``value_head.safetensors``.
"""

from alignment.stages.ppo.config import PPOStageConfig
from alignment.stages.ppo.stage import run_ppo

__all__ = ["PPOStageConfig", "run_ppo"]
