"""Source loaders: read, validate and return typed records (see docs/data.md).

Every loader takes ``path=None`` (resolved through :func:`resolve_data_file`) and
``on_bad_row="error"|"skip"`` with an optional ``bad_rows`` list that collects skipped rows.
"""

from data_builders.sources.counterfactual import load_counterfactual
from data_builders.sources.crows_pairs import load_crows_pairs
from data_builders.sources.prompt_pools import POOLS, load_prompt_pool
from data_builders.sources.readers import BadRow
from data_builders.sources.records import (
    CounterfactualRow,
    CrowsPair,
    PromptRecord,
    RewritePair,
    StereoSetItem,
    axis_of,
)
from data_builders.sources.resolve import known_files, resolve_data_file
from data_builders.sources.rewrite_pairs import load_rewrite_pairs
from data_builders.sources.stereoset import load_stereoset

__all__ = [
    "POOLS",
    "BadRow",
    "CounterfactualRow",
    "CrowsPair",
    "PromptRecord",
    "RewritePair",
    "StereoSetItem",
    "axis_of",
    "known_files",
    "load_counterfactual",
    "load_crows_pairs",
    "load_prompt_pool",
    "load_rewrite_pairs",
    "load_stereoset",
    "resolve_data_file",
]
