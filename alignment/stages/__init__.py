"""Training stages: supervised fine-tuning (``sft``), preference optimisation (``dpo``) and online RL
(``ppo``, our own trainer; ``grpo`` and ``rloo`` on TRL).

Each stage reads a config dataclass (from a YAML recipe and flags), trains, and writes one run
directory::

    <out_dir>/
      stage.json      config, config hash, metrics, loss curves, wall time, peak memory, status
      manifest.json   versions, git commit, device, command (``alignment.runs``)
      checkpoints/    trainer checkpoints (``--resume`` continues from the last complete one)
      model/          the trained model: full weights, or a LoRA adapter pointing at its base
      dataset/        the dataset a builder spec produced (only when the stage built one)

``model/`` loads with :func:`alignment.models.load_model`, and the next stage takes either
``<out_dir>/model`` or ``<out_dir>`` itself as its ``model``.

>>> from alignment.stages.sft import SFTStageConfig, run_sft          # doctest: +SKIP
>>> model_dir = run_sft(SFTStageConfig(model="tiny-random", dataset="data/sft"), "runs/sft")  # doctest: +SKIP
"""
