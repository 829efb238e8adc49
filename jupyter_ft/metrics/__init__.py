"""Local ``evaluate`` modules, so that the metrics work offline.

``evaluate.load("rouge")`` downloads the module's script from the Hugging Face hub. These directories hold
self-contained modules with the same inputs and outputs, loaded with ``evaluate.load(<path of the directory>)``
(see :func:`jupyter_ft.eval.metrics.load_metric`). Each directory holds one script named like the directory,
as ``evaluate`` expects; they import only ``evaluate``, ``datasets`` and the scoring library.

=============  ==========================  ================================================================
module         computed with               returns
=============  ==========================  ================================================================
``rouge``      ``rouge-score``             ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum`` (F-measure)
``bleu``       ``sacrebleu``               ``bleu`` (0-1), ``precisions``, ``brevity_penalty``, lengths
``exact_match``  plain Python              ``exact_match`` (0-1)
``accuracy``   numpy                       ``accuracy`` (0-1, of integer class ids)
=============  ==========================  ================================================================
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
LOCAL_METRICS = ("rouge", "bleu", "exact_match", "accuracy")


def module_path(name: str) -> Path:
    """The directory of the local module ``name`` (what ``evaluate.load`` takes)."""
    if name not in LOCAL_METRICS:
        raise KeyError(f"no local evaluate module {name!r}; local modules: {', '.join(LOCAL_METRICS)}")
    return METRICS_DIR / name
