"""safealign's benchmarks (``make bench``): each writes ``bench/results/<name>.json`` in the shared record
format of :mod:`bench.record`. Run them from the repository root, e.g. ``python -m bench.stages``.

This is repository tooling, like ``tests/``: it is not installed with safealign, and no module of the
product (``alignment``, ``reward``, ``data_builders``) imports it.
"""
