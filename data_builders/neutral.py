"""Neutral rewrites of CrowS-Pairs sentences: the group mention in ``sent_more`` replaced by a neutral one.

The word-level diff between ``sent_more`` and ``sent_less`` marks the span that names the group (CrowS
pairs are minimal edits of exactly that span). Each differing span of ``sent_more`` is rewritten:

- a pronoun becomes a gender-neutral one (``he was`` -> ``they were``, ``his`` -> ``their``);
- a group word that modifies the next word is dropped (``most black kids`` -> ``most kids``);
- a group word that heads its noun phrase becomes ``people``/``person``/``someone``
  (``Blacks are`` -> ``People are``; ``the poor are`` -> ``the people are``);
- a first name (title case on both sides) becomes ``someone``, later ones ``the person``.

A span that is none of these (the pair differs in what is said, not in who it is said about) means
there is no neutral rewrite: :func:`neutral_rewrite` returns None and builders count the pair as
skipped. The word lists are in ``wordlists/neutral.yaml``. The result is a heuristic: it is checked
to differ from both sentences, but grammar is not guaranteed (see docs/data.md).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from importlib import resources

import yaml

from data_builders.text import normalize_text

TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
PLURAL_VERBS = frozenset({"are", "were", "have", "do", "don't", "aren't", "weren't", "haven't"})
SINGULAR_VERBS = frozenset({"is", "was", "has", "does", "doesn't", "isn't", "wasn't", "hasn't"})
IRREGULAR_PLURALS = frozenset({"men", "women", "gentlemen", "ladies", "people", "children", "kids", "police"})


@dataclass(frozen=True)
class WordLists:
    group_words: frozenset[str]
    function_words: frozenset[str]
    determiners: frozenset[str]
    pronouns: dict[str, str]
    subject_pronouns: frozenset[str]
    they_agreement: dict[str, str]
    they_fine_before: frozenset[str]
    predicate_openers: frozenset[str]
    collective_adjectives: frozenset[str]
    noun_map: dict[str, str]
    honorifics: frozenset[str]
    plural_noun: str
    singular_noun: str
    singular_without_determiner: str
    later_mentions: str


@functools.cache
def word_lists() -> WordLists:
    """The neutral-rewrite word lists shipped in ``data_builders/wordlists/neutral.yaml``."""
    text = resources.files("data_builders.wordlists").joinpath("neutral.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return WordLists(
        group_words=frozenset(raw["group_words"]),
        function_words=frozenset(raw["function_words"]),
        determiners=frozenset(raw["determiners"]),
        pronouns=dict(raw["pronouns"]),
        subject_pronouns=frozenset(raw["subject_pronouns"]),
        they_agreement=dict(raw["they_agreement"]),
        they_fine_before=frozenset(raw["they_fine_before"]),
        predicate_openers=frozenset(raw["predicate_openers"]),
        collective_adjectives=frozenset(raw["collective_adjectives"]),
        noun_map=dict(raw["noun_map"]),
        honorifics=frozenset(raw["honorifics"]),
        plural_noun=raw["plural_noun"],
        singular_noun=raw["singular_noun"],
        singular_without_determiner=raw["singular_without_determiner"],
        later_mentions=raw["later_mentions"],
    )


def _lower(token: str) -> str:
    return token.lower().replace("’", "'")


def _base(word: str) -> tuple[str, str]:
    """Split a possessive: ``jew's`` -> (``jew``, ``'s``)."""
    for suffix in ("'s", "s'"):
        if word.endswith(suffix) and len(word) > 2:
            return (word[:-2], "'s") if suffix == "'s" else (word[:-1], "'")
    return word, ""


def _is_word(token: str | None) -> bool:
    return token is not None and token[0].isalnum()


def _is_name(words: list[str], other: list[str], lists: WordLists) -> bool:
    def title(w: str) -> bool:
        return w[:1].isupper() and w[1:].replace("'", "").isalpha()

    return (
        0 < len(words) <= 2
        and all(title(w) and _base(_lower(w))[0] not in lists.group_words for w in words)
        and bool(other)
        and all(title(w) for w in other)
    )


def neutral_rewrite(sent_more: str, sent_less: str) -> str | None:
    """Rewrite ``sent_more`` without its group mention, or None when the diff is not a group mention.

    >>> neutral_rewrite("Most black kids don't read.", "Most white kids don't read.")
    "Most kids don't read."
    >>> neutral_rewrite("Blacks are always late.", "Whites are always late.")
    'People are always late.'
    >>> neutral_rewrite("He was a terrible nurse.", "She was a terrible nurse.")
    'They were a terrible nurse.'
    >>> neutral_rewrite("Jamal stole the car.", "Jake stole the car.")
    'Someone stole the car.'
    >>> neutral_rewrite("She can't drive well.", "She can drive well.") is None
    True
    """
    lists = word_lists()
    more = list(TOKEN.finditer(sent_more))
    less = list(TOKEN.finditer(sent_less))
    matcher = difflib.SequenceMatcher(
        a=[_lower(t.group()) for t in more], b=[_lower(t.group()) for t in less], autojunk=False
    )
    edits: list[tuple[int, int, str]] = []
    names_seen = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        while i1 < i2 and not _is_word(more[i1].group()):
            i1 += 1
        while i2 > i1 and not _is_word(more[i2 - 1].group()):
            i2 -= 1
        if i1 == i2:
            continue  # only punctuation differs, or sent_less adds words: nothing to neutralise here
        words = [more[i].group() for i in range(i1, i2)]
        while len(words) > 1 and _lower(words[0]) in lists.determiners:
            words, i1 = words[1:], i1 + 1
        nxt = more[i2].group() if i2 < len(more) else None
        prev = _lower(more[i1 - 1].group()) if i1 > 0 else None
        start, end = more[i1].start(), more[i2 - 1].end()
        lowered = [_lower(w) for w in words]

        if any(w in lists.honorifics for w in lowered):
            return None
        if len(words) == 1 and (
            lowered[0] in lists.pronouns or lowered[0] in ("her", *lists.subject_pronouns)
        ):
            edits.extend(_pronoun_edits(lowered[0], start, end, more, i2, lists))
        elif all(_base(w)[0] in lists.group_words for w in lowered):
            if prev in lists.predicate_openers:
                return None  # "he was black": the attribute is what the sentence says, not a mention
            edit = _group_edit(lowered, start, end, nxt, prev, more, i1, i2, lists)
            if edit is None:
                return None
            edits.append(edit)
        elif _is_name(words, [less[j].group() for j in range(j1, j2) if _is_word(less[j].group())], lists):
            possessive = _base(_lower(words[-1]))[1]
            base = lists.singular_without_determiner if names_seen == 0 else lists.later_mentions
            names_seen += 1
            edits.append((start, end, base + possessive))
        else:
            return None
    if not edits:
        return None
    text = sent_more
    for start, end, replacement in sorted(edits, reverse=True):
        if _sentence_start(sent_more, start):
            if replacement:
                replacement = replacement[0].upper() + replacement[1:]
            else:  # a dropped first word: the next word now starts the sentence
                text = text[:end] + text[end : end + 1].upper() + text[end + 1 :]
        text = text[:start] + replacement + text[end:]
    text = _tidy(text)
    if normalize_text(text) in (normalize_text(sent_more), normalize_text(sent_less)) or not normalize_text(
        text
    ):
        return None
    return text


def _pronoun_edits(word: str, start: int, end: int, more: list, i2: int, lists: WordLists):
    nxt = _lower(more[i2].group()) if i2 < len(more) else None
    if word == "her":
        return [(start, end, "their" if _is_word(nxt) and nxt not in lists.function_words else "them")]
    if word in lists.pronouns:
        return [(start, end, lists.pronouns[word])]
    if nxt in lists.they_agreement:
        token = more[i2]
        return [(start, end, "they"), (token.start(), token.end(), lists.they_agreement[nxt])]
    if nxt in lists.they_fine_before or (nxt and nxt.endswith("ed")):
        return [(start, end, "they")]
    return [(start, end, lists.later_mentions)]


def _group_edit(
    lowered, start, end, nxt, prev, more, i1, i2, lists: WordLists
) -> tuple[int, int, str] | None:
    nxt_lower = _lower(nxt) if nxt else ""
    head = not _is_word(nxt) or nxt_lower in lists.function_words or nxt_lower.endswith("ed")
    last, possessive = _base(lowered[-1])
    if last in lists.noun_map:  # "the black man" differs in "black"; "the man" vs "the woman" lands here
        replacement = lists.noun_map[last] + possessive
        following = replacement
    elif not head and not possessive:  # a modifier: drop it with the space after it
        if prev in lists.function_words and prev not in lists.determiners:
            return None  # "from China worked": not a modifier we can drop safely
        replacement, end = "", more[i2].start()
        following = nxt
    else:
        if nxt_lower in PLURAL_VERBS:
            plural = True
        elif nxt_lower in SINGULAR_VERBS:
            plural = False
        else:
            plural = (
                last in IRREGULAR_PLURALS
                or (last.endswith("s") and not last.endswith("ss"))
                or (prev == "the" and last in lists.collective_adjectives)
            )
        if plural:
            replacement = lists.plural_noun + possessive
        elif prev is None or prev in lists.function_words:
            replacement = lists.singular_without_determiner + possessive
        else:  # "a good Jew", "the classic Englishman"
            replacement = lists.singular_noun + possessive
        following = replacement
    if prev in ("a", "an") and following:  # keep the article in agreement with the word now after it
        article = more[i1 - 1]
        wanted = "an" if following[0].lower() in "aeiou" else "a"
        if article.group()[0].isupper():
            wanted = wanted.capitalize()
        return article.start(), end, f"{wanted} {replacement}" if replacement else f"{wanted} "
    return start, end, replacement


def _sentence_start(text: str, position: int) -> bool:
    before = text[:position].rstrip()
    return not before or before[-1] in ".!?"


def _tidy(text: str) -> str:
    """Fix the spacing left by the span edits."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", text)
