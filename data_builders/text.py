"""Text normalisation shared by grouping keys, deduplication and the leakage audit."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_SPACE_BEFORE = re.compile(r"\s+([.,!?;:%)\]}]|n't\b|'(?:s|re|ve|ll|d|m)\b)", re.IGNORECASE)
_SPACE_AFTER = re.compile(r"([(\[{$])\s+")


def strip_format_characters(text: str) -> str:
    """Remove invisible format characters (Unicode category Cf: zero-width space and joiners, soft
    hyphen, byte-order mark, bidi controls), which change the bytes of a text but not what it shows.

    >>> strip_format_characters("wo\u200brd\u00ad")
    'word'
    """
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def visible_text(text: str) -> str:
    """NFKC-normalised ``text`` without format characters, stripped: empty when nothing would show."""
    return strip_format_characters(unicodedata.normalize("NFKC", text)).strip()


def normalize_text(text: str) -> str:
    """Case-fold, NFKC-normalise, drop format characters and keep only word characters, one space apart.

    Tokenised and detokenised spellings of the same sentence compare equal, and so do texts that differ
    only by invisible characters or compatibility forms (full-width letters, ligatures).

    >>> normalize_text("I 'm  HERE , ok?") == normalize_text("I'm here, OK")
    True
    >>> normalize_text("Ça va")
    'ça va'
    >>> normalize_text("Wo\u200bmen are \uff42ad drivers") == normalize_text("Women are bad drivers")
    True
    """
    return " ".join(_WORD.findall(visible_text(text).casefold()))


def detokenize(text: str) -> str:
    """Undo tokenizer-style spacing: no space before punctuation or inside brackets, contractions joined.

    >>> detokenize("I 'm sure it does n't matter , ( really ) !")
    "I'm sure it doesn't matter, (really)!"
    >>> detokenize("Costs $ 5 , or 10 % less .")
    'Costs $5, or 10% less.'
    """
    text = _SPACE_BEFORE.sub(r"\1", text)
    return " ".join(_SPACE_AFTER.sub(r"\1", text).split())
