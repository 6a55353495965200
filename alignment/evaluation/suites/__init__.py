"""Evaluation suites: ``<name>.yaml`` describes a suite (data, metrics, defaults), ``<name>.py`` runs it."""
