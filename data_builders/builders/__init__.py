"""Builders: SFT, preference and prompt datasets with grouped splits, an audit, provenance and a card."""

from data_builders.builders.build import BuildResult, run_build
from data_builders.builders.config import BuildConfig
from data_builders.builders.output import load_built

__all__ = ["BuildConfig", "BuildResult", "load_built", "run_build"]
