"""Counterfactual augmentation: copies of training rows with group words swapped (``he`` <-> ``she``...).

A copy is added only where a swap changed something, so a dataset that mentions one gender more than
the other gains the mirrored mentions and ends up balanced. Copies keep their source row's split
group, so they always land in the same split. Word lists: ``wordlists/swaps.yaml`` (gender, religion).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import yaml

from alignment.errors import SafealignError

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_NOT_A_NOUN_AFTER_HER = frozenset(
    "and or but to of in on at by for from with as than so because when while if that who is was"
    " a an the his her my your their our its this these those".split()
)


@functools.cache
def swap_tables() -> dict[str, dict[str, str]]:
    """Axis -> word -> counterpart, from ``wordlists/swaps.yaml`` (both directions)."""
    text = resources.files("data_builders.wordlists").joinpath("swaps.yaml").read_text(encoding="utf-8")
    tables = {}
    for axis, pairs in yaml.safe_load(text).items():
        table: dict[str, str] = {}
        for a, b in pairs:
            if a in table or b in table:
                raise SafealignError(f"swaps.yaml, axis {axis!r}: {a!r}/{b!r} appears in two pairs")
            table[a], table[b] = b, a
        tables[axis] = table
    return tables


def axes() -> tuple[str, ...]:
    """The augmentation axes with word lists."""
    return tuple(swap_tables())


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_words(text: str, axis: str) -> str:
    """Swap every listed word of ``axis`` in ``text`` for its counterpart, keeping case.

    >>> swap_words("He gave her his book, and she thanked him.", "gender")
    'She gave him her book, and he thanked her.'
    >>> swap_words("Her mother went to church.", "religion")
    'Her mother went to mosque.'
    """
    table = swap_tables().get(axis)
    if table is None:
        raise SafealignError(f"unknown augmentation axis {axis!r}; choose from {', '.join(axes())}")
    matches = list(WORD.finditer(text))
    out, last = [], 0
    for index, match in enumerate(matches):
        word = match.group()
        lower = word.lower()
        if axis == "gender" and lower in ("her", "his"):
            nxt = matches[index + 1].group().lower() if index + 1 < len(matches) else None
            between = text[match.end() : matches[index + 1].start()] if nxt else ""
            before_noun = nxt is not None and nxt not in _NOT_A_NOUN_AFTER_HER and not between.strip()
            counterpart = (
                ("his" if before_noun else "him") if lower == "her" else ("her" if before_noun else "hers")
            )
        else:
            counterpart = table.get(lower)
        if counterpart is None:
            continue
        out.append(text[last : match.start()])
        out.append(_match_case(counterpart, word))
        last = match.end()
    out.append(text[last:])
    return "".join(out)
