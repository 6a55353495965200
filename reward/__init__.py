"""Scoring text for RL and evaluation (see docs/rewards.md).

- :mod:`reward.toxicity`: toxicity scorers behind one interface (``load_scorer``);
- :mod:`reward.stereotype`: the stereotype classifier safealign trains itself;
- :mod:`reward.functions`, :mod:`reward.composite`, :mod:`reward.registry`: reward callables with TRL's
  signature, weighted composites and the name/plugin registry (``build_reward``).
"""
