"""Text normalisation shared by grouping keys, deduplication and the leakage audit."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_SPACE_BEFORE = re.compile(r"\s+([.,!?;:%)\]}]|n't\b|'(?:s|re|ve|ll|d|m)\b)", re.IGNORECASE)
_SPACE_AFTER = re.compile(r"([(\[{$])\s+")


def normalize_text(text: str) -> str:
    """Case-fold, NFKC-normalise and keep only word characters, one space apart.

    Tokenised and detokenised spellings of the same sentence compare equal.

    >>> normalize_text("I 'm  HERE , ok?") == normalize_text("I'm here, OK")
    True
    >>> normalize_text("Ça va")
    'ça va'
    """
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def detokenize(text: str) -> str:
    """Undo tokenizer-style spacing: no space before punctuation or inside brackets, contractions joined.

    >>> detokenize("I 'm sure it does n't matter , ( really ) !")
    "I'm sure it doesn't matter, (really)!"
    >>> detokenize("Costs $ 5 , or 10 % less .")
    'Costs $5, or 10% less.'
    """
    text = _SPACE_BEFORE.sub(r"\1", text)
    return " ".join(_SPACE_AFTER.sub(r"\1", text).split())
