"""Deterministic, stratified subsampling for ``--limit`` and presets.

Each item gets a rank from a hash of ``(seed, key)``; a stratum keeps its lowest-ranked items. So the
same seed always picks the same items on every machine, and a larger limit picks a superset of a
smaller one. Strata get seats in proportion to their size (largest remainders), and every stratum gets
at least one seat when the limit allows it.

>>> items = [{"id": str(i), "cat": "ab"[i % 2]} for i in range(10)]
>>> picked = subsample(items, 4, key=lambda x: x["id"], strata=lambda x: x["cat"], seed=0)
>>> len(picked), sorted({x["cat"] for x in picked})
(4, ['a', 'b'])
>>> picked == subsample(items, 4, key=lambda x: x["id"], strata=lambda x: x["cat"], seed=0)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def rank(key: str, seed: int) -> int:
    """A stable pseudo-random rank for ``key`` (same on every machine and Python run)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def allocate(sizes: dict[str, int], limit: int) -> dict[str, int]:
    """Seats per stratum: proportional to size, largest remainders first, at least one each if possible.

    >>> allocate({"a": 90, "b": 9, "c": 1}, 10)
    {'a': 8, 'b': 1, 'c': 1}
    """
    total = sum(sizes.values())
    if limit >= total:
        return dict(sizes)
    names = sorted(sizes)
    seats = {name: 0 for name in names}
    if limit >= len([n for n in names if sizes[n] > 0]):
        for name in names:
            if sizes[name] > 0:
                seats[name] = 1
    remaining = limit - sum(seats.values())
    if remaining > 0:
        # The rest goes where the proportional share exceeds the seat already given.
        want = {n: max(0.0, limit * sizes[n] / total - seats[n]) for n in names}
        want_total = sum(want.values()) or 1.0
        quotas = {n: remaining * want[n] / want_total for n in names}
        for n in names:
            seats[n] += min(int(quotas[n]), sizes[n] - seats[n])
        left = limit - sum(seats.values())
        order = sorted(names, key=lambda n: (-(quotas[n] - int(quotas[n])), -sizes[n], n))
        while left > 0:
            for n in order:
                if left > 0 and seats[n] < sizes[n]:
                    seats[n] += 1
                    left -= 1
    return seats


def subsample(
    items: Sequence[T],
    limit: int | None,
    *,
    key: Callable[[T], str],
    strata: Callable[[T], str] | None = None,
    seed: int = 0,
) -> list[T]:
    """At most ``limit`` items, chosen deterministically (stratified when ``strata`` is given).

    The chosen items keep their original order. ``limit=None`` keeps everything.
    """
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    by_stratum: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_stratum.setdefault(strata(item) if strata else "", []).append(i)
    seats = allocate({s: len(ix) for s, ix in by_stratum.items()}, limit)
    chosen: list[int] = []
    for stratum, indices in by_stratum.items():
        ranked = sorted(indices, key=lambda i: (rank(key(items[i]), seed), i))
        chosen.extend(ranked[: seats[stratum]])
    return [items[i] for i in sorted(chosen)]
