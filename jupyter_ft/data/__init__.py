"""From whatever the user has (a file, a DataFrame, a list, a datasets dir) to tokenized, masked examples.

The package splits that path along its jobs: :mod:`.loading` reads a source into rows, :mod:`.formats`
decides which columns hold which role and turns a row into chat turns, :mod:`.templating` renders turns
with the model's chat template and masks the prompt, :mod:`.prepare` runs the whole pipeline for a run,
and :mod:`.answers` holds the one answer-normalisation rule used to compare outputs with references.
"""

from __future__ import annotations

from ..errors import DataError
from .answers import normalize_answer
from .formats import ALIASES, FORMAT_ROLES, detect_format, prompt_messages, to_messages, validate_rows
from .loading import DEMO_DIR, load_rows, source_name
from .prepare import PreparedData, fingerprint_rows, prepare_data
from .templating import IGNORE_INDEX, render_prompt, render_segments, tokenize_messages

__all__ = [
    "ALIASES",
    "DEMO_DIR",
    "FORMAT_ROLES",
    "IGNORE_INDEX",
    "DataError",
    "PreparedData",
    "detect_format",
    "fingerprint_rows",
    "load_rows",
    "normalize_answer",
    "prepare_data",
    "prompt_messages",
    "render_prompt",
    "render_segments",
    "source_name",
    "to_messages",
    "tokenize_messages",
    "validate_rows",
]
