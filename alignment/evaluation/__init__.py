"""Evaluation harness: bias and knowledge-retention suites on a fast batched log-likelihood engine.

>>> from alignment.evaluation import SUITES
>>> "crows_pairs" in SUITES and "truthfulqa_mc" in SUITES
True
"""

from alignment.evaluation.engine import LoglikEngine, Scored
from alignment.evaluation.presets import load_preset
from alignment.evaluation.registry import load_suites
from alignment.evaluation.results import load_results
from alignment.evaluation.runner import evaluate

SUITES = load_suites()

__all__ = ["SUITES", "LoglikEngine", "Scored", "evaluate", "load_preset", "load_results", "load_suites"]
