"""ROUGE, computed offline with Google's ``rouge-score`` (same inputs and outputs as the hub's ``rouge``)."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE (Recall-Oriented Understudy for Gisting Evaluation) compares a generated text with one or more
references by their overlapping n-grams (rouge1, rouge2) and longest common subsequence (rougeL; rougeLsum
splits the texts into sentences at newlines first). The score of each type is the F-measure.
This module is a local, offline copy of the interface of the hub's "rouge", computed with `rouge-score`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or a list of lists of references (the best one counts).
    rouge_types: the ROUGE types to compute (default rouge1, rouge2, rougeL, rougeLsum).
    use_aggregator: average over the examples (default True); False gives one score per example. The average
        is the plain mean (the hub's module reports the median of a random bootstrap, which differs slightly
        from run to run).
    use_stemmer: Porter-stem words before matching (default False).
    tokenizer: a callable text -> list of tokens, or an object with a ``tokenize`` method (default: rouge-score's
        lower-cased alphanumeric tokens).
Returns:
    a dict of rouge type -> F-measure (a float, or a list of floats with use_aggregator=False).
Examples:
    >>> rouge = evaluate.load("jupyter_ft/metrics/rouge")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])["rouge1"]
    0.8571428571428571
"""


class _CallableTokenizer:
    def __init__(self, fn):
        self.fn = fn

    def tokenize(self, text):
        return self.fn(text)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False,
                 tokenizer=None):
        rouge_types = list(rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"])
        if tokenizer is not None and not hasattr(tokenizer, "tokenize"):
            tokenizer = _CallableTokenizer(tokenizer)
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer)
        per_example = {t: [] for t in rouge_types}
        for ref, pred in zip(references, predictions):
            if isinstance(ref, (list, tuple)):
                score = scorer.score_multi(list(ref), pred)
            else:
                score = scorer.score(ref, pred)
            for t in rouge_types:
                per_example[t].append(float(score[t].fmeasure))
        if not use_aggregator:
            return per_example
        n = len(predictions)
        return {t: (sum(v) / n if n else 0.0) for t, v in per_example.items()}
