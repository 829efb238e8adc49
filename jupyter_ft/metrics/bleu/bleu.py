"""Corpus BLEU, computed offline with ``sacrebleu`` (the inputs and output keys of the hub's ``bleu``)."""

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
BLEU scores a generated text by its modified n-gram precisions (n = 1..max_order) against the references,
geometric mean times a brevity penalty. Computed with sacrebleu (13a tokenization by default) and reported
on a 0-1 scale like the hub's "bleu" module.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or a list of lists of references (every example the same number).
    max_order: the longest n-gram (default 4).
    smooth: Lin & Och (2004) add-one smoothing of the n > 1 precisions (default False).
    tokenize: a sacrebleu tokenizer name: "13a" (default), "none", "intl", "char", ...
    lowercase: compare lower-cased (default False).
    effective_order: average only over the n-gram orders the texts have (for very short texts; default False).
Returns:
    bleu (0-1), precisions (list, 0-1), brevity_penalty, length_ratio, translation_length, reference_length.
Examples:
    >>> bleu = evaluate.load("jupyter_ft/metrics/bleu")
    >>> round(bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])["bleu"], 4)
    0.5373
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
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
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(self, predictions, references, max_order=4, smooth=False, tokenize="13a", lowercase=False,
                 effective_order=False):
        refs = [list(r) if isinstance(r, (list, tuple)) else [r] for r in references]
        n_refs = {len(r) for r in refs}
        if len(n_refs) > 1:
            raise ValueError("bleu: every prediction needs the same number of references")
        streams = [list(stream) for stream in zip(*refs)]  # sacrebleu takes one stream per reference slot
        metric = sacrebleu.BLEU(max_ngram_order=max_order, tokenize=tokenize, lowercase=lowercase,
                                smooth_method="add-k" if smooth else "none", smooth_value=1 if smooth else None,
                                effective_order=effective_order)
        score = metric.corpus_score(list(predictions), streams)
        return {
            "bleu": score.score / 100.0,
            "precisions": [p / 100.0 for p in score.precisions],
            "brevity_penalty": score.bp,
            "length_ratio": score.sys_len / score.ref_len if score.ref_len else 0.0,
            "translation_length": score.sys_len,
            "reference_length": score.ref_len,
        }
