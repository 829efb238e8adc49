"""Faults for the distributed suite, put into the worker processes of a launch through ``PYTHONPATH`` (this file
is imported by every Python process that has this folder on its path; nothing happens unless the variables below
are set). Production code carries no test hooks.

- ``JFT_TEST_FAIL_RANK`` / ``JFT_TEST_FAIL_STEP``: that rank raises at the end of that optimizer step.
- ``JFT_TEST_STEP_SECONDS``: every rank sleeps this long at the end of each step (a run slow enough to stop).
"""

import os

_FAIL_RANK = os.environ.get("JFT_TEST_FAIL_RANK")
_SLEEP = float(os.environ.get("JFT_TEST_STEP_SECONDS") or 0)

if os.environ.get("RANK") is not None and (_FAIL_RANK is not None or _SLEEP):
    import time

    from jupyter_ft.engine import callback

    _original = callback.RunCallbackMixin.on_step_end
    _fail_step = int(os.environ.get("JFT_TEST_FAIL_STEP") or 2)

    def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
        if _SLEEP:
            time.sleep(_SLEEP)
        if _FAIL_RANK == os.environ.get("RANK") and state.global_step == _fail_step:
            raise RuntimeError(f"injected failure on rank {_FAIL_RANK} at step {_fail_step}")
        return _original(self, args, state, control, **kw)

    callback.RunCallbackMixin.on_step_end = on_step_end
