"""The one rule for comparing a generated answer with a reference, shared by evaluation and the probes.

Two normalisers that disagreed (one dropped articles, one did not) made "exact match" in ``%ft_eval`` and
the forgetting probe's accuracy count different answers as right; this module is the single definition.
"""

from __future__ import annotations

import re

__all__ = ["normalize_answer"]

# Anything that is not a letter, digit or whitespace, and the underscore (which ``\w`` counts as a letter):
# ASCII punctuation as well as curly quotes, dashes, ellipses and other symbols a model may emit.
_PUNCT = re.compile(r"[^\w\s]|_")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD-style normal form: lower-case, punctuation to spaces, drop the articles a/an/the, collapse whitespace.

    "The Billing." and "billing" are one answer; so are "Paris" and "paris!". Punctuation becomes a space
    (not nothing) so "3.14" stays two words rather than merging into "314".
    """
    text = _PUNCT.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())
