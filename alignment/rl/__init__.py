"""Reinforcement learning building blocks for language models: the parts of PPO as small functions.

- :mod:`alignment.rl.advantages`: masked statistics, whitening, GAE.
- :mod:`alignment.rl.losses`: clipped policy and value losses, log-probs, entropy.
- :mod:`alignment.rl.kl`: per-token KL estimators and the (adaptive) KL coefficient.
- :mod:`alignment.rl.value_head`: a policy LM with a scalar value head on its trunk.
- :mod:`alignment.rl.rollout`: sampling, masks after EOS, scoring with reward callables.
- :mod:`alignment.rl.update`: one PPO iteration over a batch of rollouts.

The training loop around them (data, models, logging, checkpoints) is :mod:`alignment.stages.ppo`.
"""
