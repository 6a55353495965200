"""Data builders: validated sources, grouped splits, and SFT/preference/prompt datasets (docs/data.md)."""


def load_built(path):
    """Load a dataset written by ``safealign data build`` (see :func:`data_builders.builders.load_built`)."""
    from data_builders.builders.output import load_built as _load_built

    return _load_built(path)
