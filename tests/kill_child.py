"""The "kernel" of the kill suite (``tests/test_kill.py``): trains one run and freezes at a chosen point, so that
the test can ``kill -9`` it there and not wherever timing luck put it.

``install(point, marker, at)`` patches this process only (the package's code is never edited): when training
reaches ``point`` it writes ``marker`` (a JSON object saying where it stopped, renamed into place so the test
never reads half of it) and then sleeps for ever in the training thread. The heartbeat thread keeps beating
meanwhile, so to every reader the run is alive and ``running`` until the kill.

Points (``at`` picks which occurrence):

- ``mid-step``: step ``at`` has run its forward and backward pass, its optimizer step has not happened;
- ``mid-eval``: inside the Trainer's evaluation loop of evaluation number ``at``, after its first batch;
- ``mid-checkpoint``: the checkpoint of step ``at`` has its weights, optimizer and RNG state written, its
  ``trainer_state.json`` not yet (what makes it complete);
- ``mid-checkpoint-in-place``: the same, with the run's Trainer saving as transformers' own does, in place in
  ``checkpoints/checkpoint-N`` rather than staged and renamed: the half checkpoint then sits where a complete one
  would, and only the store's test of completeness keeps a resume from it;
- ``mid-final-save``: the final adapter's weights are written into the temporary folder the real
  ``RunDir.save_adapter`` uses, the tokenizer and the rename into ``adapter/`` not yet.

Run as a script (``python kill_child.py POINT AT CONFIG_JSON MARKER``) it is a plain-Python kernel: it trains the
run of ``CONFIG_JSON`` with ``jupyter_ft.finetune(config, wait=True)``; in a real Jupyter kernel the test calls
``install`` in a cell and launches the run with ``%%finetune``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn

POINTS = ("mid-step", "mid-eval", "mid-checkpoint", "mid-checkpoint-in-place", "mid-final-save")


def hang(marker: Path, where: dict[str, Any]) -> NoReturn:
    """Say where training stands (atomically: the test polls for the file), then never return: the process
    is to die here by SIGKILL, with everything it wrote so far exactly as a real crash would leave it."""
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(dict(where, pid=os.getpid())), encoding="utf-8")
    os.replace(tmp, marker)
    while True:
        time.sleep(3600)


def install(point: str, marker: str | os.PathLike[str], at: int) -> None:
    """Patch this process so that training freezes at ``point`` (see the module's docstring)."""
    if point not in POINTS:
        raise ValueError(f"unknown kill point {point!r}; choose one of {POINTS}")
    import torch
    from transformers import Trainer

    torch.set_num_threads(1)  # two cores on the test machine, shared with the test process
    target = Path(marker)
    if point == "mid-step":
        _wrap(Trainer, "training_step", target, lambda self: self.state.global_step + 1 == at,
              lambda self: {"point": point, "step": self.state.global_step + 1})
    elif point == "mid-eval":
        evaluations = {"n": 0, "batches": 0}
        real_evaluate = Trainer.evaluate

        def evaluate(self: Any, *args: Any, **kwargs: Any) -> Any:
            evaluations["n"] += 1
            evaluations["batches"] = 0
            return real_evaluate(self, *args, **kwargs)

        def second_batch(self: Any) -> bool:
            evaluations["batches"] += 1
            return evaluations["n"] == at and evaluations["batches"] == 2

        Trainer.evaluate = evaluate  # type: ignore[method-assign]
        _wrap(Trainer, "prediction_step", target, second_batch,
              lambda self: {"point": point, "step": self.state.global_step, "evaluation": at})
    elif point.startswith("mid-checkpoint"):
        if point == "mid-checkpoint-in-place":
            from jupyter_ft.engine.trainer import trainer_class

            trainer_class()._save_checkpoint = Trainer._save_checkpoint  # type: ignore[attr-defined]
        real_rng = Trainer._save_rng_state

        def save_rng_state(self: Any, output_dir: str) -> None:
            real_rng(self, output_dir)
            if self.state.global_step == at:
                hang(target, {"point": point, "step": at, "checkpoint": str(output_dir)})

        Trainer._save_rng_state = save_rng_state  # type: ignore[method-assign]
    else:
        from jupyter_ft.store.run_dir import RunDir

        real_save = RunDir.save_adapter

        def save_adapter(self: Any, model: Any, tokenizer: Any, save: Any = None) -> None:
            real_weights = model.save_pretrained

            def weights_then_hang(path: Any, *args: Any, **kwargs: Any) -> None:
                real_weights(path, *args, **kwargs)
                hang(target, {"point": point, "partial": str(path)})

            model.save_pretrained = weights_then_hang  # this model only: the real method calls it
            real_save(self, model, tokenizer, save=save)

        RunDir.save_adapter = save_adapter  # type: ignore[method-assign]


def _wrap(cls: type, name: str, marker: Path, when: Callable[[Any], bool],
          where: Callable[[Any], dict[str, Any]]) -> None:
    """Replace ``cls.name`` by the real method followed, when ``when(self)``, by :func:`hang`."""
    real = getattr(cls, name)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        if when(self):
            hang(marker, where(self))
        return out

    setattr(cls, name, wrapped)


def main(argv: list[str]) -> int:
    point, at, config_path, marker = argv
    install(point, marker, int(at))
    import jupyter_ft

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    run = jupyter_ft.finetune(config, wait=True)
    # reaching this line means the kill point was never reached: the test fails with this message
    print(f"kill_child: run {run.id} ended {run.status} without reaching {point} {at}: {run.error}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
