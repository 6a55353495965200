"""safealign's core: model loading, configs, run directories, stages, evaluation, pipeline and CLI."""

__version__ = "0.1.0"
