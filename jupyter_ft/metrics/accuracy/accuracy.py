"""Accuracy of class ids (the hub's ``accuracy``, offline and without scikit-learn)."""

import datasets
import evaluate
import numpy as np

_CITATION = ""

_DESCRIPTION = """\
Accuracy is the share of predictions equal to their reference: (TP + TN) / (TP + TN + FP + FN). Inputs are
integer class ids; jupyter-ft maps generated answers to the label set of the references first (see
jupyter_ft.eval.metrics.label_ids).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted class ids (int; -1 for "no label").
    references: list of reference class ids (int).
    normalize: return the share (default True); False returns the count of correct predictions.
    sample_weight: optional weight per example.
Returns:
    accuracy: a float.
Examples:
    >>> acc = evaluate.load("jupyter_ft/metrics/accuracy")
    >>> acc.compute(predictions=[0, 1, -1], references=[0, 1, 2])["accuracy"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
            reference_urls=[],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        pred = np.asarray(predictions)
        ref = np.asarray(references)
        weight = np.ones(len(ref)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        correct = float(((pred == ref) * weight).sum())
        if not normalize:
            return {"accuracy": correct}
        total = float(weight.sum())
        return {"accuracy": correct / total if total else 0.0}
