"""Text normalisation shared by grouping keys, deduplication and the leakage audit."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """Case-fold, NFKC-normalise and keep only word characters, one space apart.

    Tokenised and detokenised spellings of the same sentence compare equal.

    >>> normalize_text("I 'm  HERE , ok?") == normalize_text("I'm here, OK")
    True
    >>> normalize_text("Ça va")
    'ça va'
    """
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))
