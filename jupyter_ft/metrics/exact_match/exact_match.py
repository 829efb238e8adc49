"""Exact match: the share of predictions identical to their reference (the hub's ``exact_match``, offline)."""

import re
import string

import datasets
import evaluate

_CITATION = ""

_DESCRIPTION = """\
The share of predictions that equal their reference exactly, after the optional normalizations (strip
regexes, ignore case, punctuation or digits). 1.0 means every prediction matched.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts.
    regexes_to_ignore: regular expressions removed from both before comparing.
    ignore_case: lower-case both first (default False).
    ignore_punctuation: drop string.punctuation from both (default False).
    ignore_numbers: drop digits from both (default False).
Returns:
    exact_match: a float in [0, 1].
Examples:
    >>> em = evaluate.load("jupyter_ft/metrics/exact_match")
    >>> em.compute(predictions=["Billing", "tech"], references=["billing", "technical"], ignore_case=True)
    {'exact_match': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=[],
        )

    def _compute(self, predictions, references, regexes_to_ignore=None, ignore_case=False,
                 ignore_punctuation=False, ignore_numbers=False):
        def norm(text):
            for pattern in regexes_to_ignore or ():
                text = re.sub(pattern, "", text)
            if ignore_case:
                text = text.lower()
            if ignore_punctuation:
                text = text.translate(str.maketrans("", "", string.punctuation))
            if ignore_numbers:
                text = text.translate(str.maketrans("", "", string.digits))
            return text

        if not references:
            return {"exact_match": 0.0}
        hits = sum(norm(p) == norm(r) for p, r in zip(predictions, references))
        return {"exact_match": hits / len(references)}
