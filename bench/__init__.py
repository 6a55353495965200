"""safealign's benchmarks (``make bench``): each writes ``bench/results/<name>.json`` in the shared record
format of :mod:`alignment.benchmark`. Run them from the repository root, e.g. ``python -m bench.stages``.
"""
