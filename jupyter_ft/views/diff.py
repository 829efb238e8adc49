"""Word differences between two answers as HTML, shared by the evaluation rows and the chat panel.

The marks are the ``jft-del`` / ``jft-ins`` classes styled in ``static/eval.css`` (see
:func:`jupyter_ft.views.eval_html.eval_style`).
"""

from __future__ import annotations

import difflib
import html
import re

__all__ = ["word_diff"]


def word_diff(a: str, b: str) -> tuple[str, str]:
    """HTML of ``a`` and ``b`` with the words that differ marked: removed from ``a`` (``jft-del``), added in
    ``b`` (``jft-ins``). Whitespace and line breaks are kept."""
    ta, tb = re.findall(r"\S+\s*|\s+", a), re.findall(r"\S+\s*|\s+", b)
    sm = difflib.SequenceMatcher(None, [t.strip() for t in ta], [t.strip() for t in tb], autojunk=False)
    out_a, out_b = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        pa, pb = html.escape("".join(ta[i1:i2])), html.escape("".join(tb[j1:j2]))
        if tag == "equal":
            out_a.append(pa)
            out_b.append(pb)
            continue
        if pa:
            out_a.append(f"<span class='jft-del'>{pa}</span>")
        if pb:
            out_b.append(f"<span class='jft-ins'>{pb}</span>")
    return "".join(out_a), "".join(out_b)
