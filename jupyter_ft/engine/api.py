"""``finetune`` and ``resume``: the two calls that start training, from Python or from the magics."""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..config import DEFAULT_ROOT, FineTuneConfig
from ..config.choices import PROCESS_LAUNCHERS
from ..errors import RunStateError
from ..runtime import registry
from ..store import ACTIVE, RunDir, RunStore
from .run import Run

__all__ = ["finetune", "resume", "prepare_resume", "coerce_config"]


def coerce_config(config: FineTuneConfig | str | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> FineTuneConfig:
    """A validated config from a ``FineTuneConfig``, a YAML string, a dict or nothing (the defaults)."""
    if config is None:
        return FineTuneConfig.from_dict({}, **overrides)
    if isinstance(config, FineTuneConfig):
        return config.replace(**overrides) if overrides else config.validate()
    if isinstance(config, str):
        return FineTuneConfig.from_yaml(config, **overrides)
    return FineTuneConfig.from_dict(config, **overrides)


def finetune(config: FineTuneConfig | str | Mapping[str, Any] | None = None, *, wait: bool = False,
             **overrides: Any) -> Run:
    """Start a QLoRA run in the background thread and return its ``Run`` at once (or when done, ``wait=True``).
    With ``compute.launcher: process | torchrun | accelerate | deepspeed`` the run trains in processes of its own
    instead (a :class:`~jupyter_ft.engine.process_run.ProcessRun`, followed from the run directory).

    ``config`` is a ``FineTuneConfig``, a YAML string or a dict; ``overrides`` use ``section__field``
    keys (``training__learning_rate=1e-4``). The run is recorded before anything can fail, so even a
    run that dies loading the model leaves its record behind.
    """
    cfg = coerce_config(config, overrides)
    store = RunStore(cfg.output.root)
    rd = store.create(cfg.to_dict(), cfg.output.name)
    if cfg.compute.launcher in PROCESS_LAUNCHERS:  # processes of its own, which outlive this kernel
        from .launch import launch_plan
        from .process_run import ProcessRun

        rd.save(launch=launch_plan(cfg, rd.path).to_dict())
        run: Run = ProcessRun(cfg, rd).start()
    else:
        run = Run(cfg, rd).start()
    if wait:
        run.wait()
    return run


def resume(run_id: str, *, root: str | os.PathLike[str] = DEFAULT_ROOT, wait: bool = False,
           trust_remote_code: bool = False) -> Run:
    """Continue an interrupted or stopped run from its last checkpoint, in its own directory.

    A run directory may come from someone else: its ``model.trust_remote_code`` is never taken from disk. Pass
    ``trust_remote_code=True`` to allow the model repository's own code for this resume."""
    run = prepare_resume(RunStore(root).find(run_id), trust_remote_code=trust_remote_code)
    if run.config.compute.launcher in PROCESS_LAUNCHERS:  # under the launcher it started with
        from .process_run import ProcessRun

        resumed = ProcessRun(run.config, run.run_dir, resume_from=run.resume_from)
        resumed.history, resumed.progress = run.history, run.progress
        run = resumed
    run.start()
    if wait:
        run.wait()
    return run


def prepare_resume(rd: RunDir, *, trust_remote_code: bool = False) -> Run:
    """The ``Run`` that continues ``rd`` from its newest complete checkpoint, not yet started; refuses a run that
    trains elsewhere (two writers in one directory) or has no checkpoint. The thread (``resume``) and a worker
    process (``python -m jupyter_ft.worker RUN_DIR --resume``) both start what this returns."""
    if rd.record.id in registry.live_run_ids():
        raise RunStateError(f"run {rd.id} is already training in this kernel")
    if rd.record.status in ACTIVE:  # the store found its worker alive: a second writer would corrupt it
        where = f"process {rd.record.pid} on {rd.record.hostname or 'this host'}"
        raise RunStateError(f"run {rd.id} is {rd.record.status} in {where}; stop it there (%ft_stop, or the lab's "
                            "Stop) and resume it when it has stopped.")
    checkpoint = rd.last_checkpoint()
    if checkpoint is None:
        raise RunStateError(f"run {rd.id} has no checkpoint to resume from (it saves every "
                            f"training.save_every steps); start a new run instead.")
    config = FineTuneConfig.from_record(rd.record.config, trust_remote_code=trust_remote_code)
    rd.clear_stop_request()  # an old request from the lab must not stop it again
    # the steps logged after the checkpoint are trained again: their old lines go, so each step appears once
    rd.supersede_after(int(checkpoint.name.rsplit("-", 1)[-1]))
    run = Run(config, rd, resume_from=str(checkpoint))
    run.history = rd.metrics()
    # what the sidebar showed when it stopped, until the resumed run's first step (the heartbeat rewrites it)
    run.progress = {k: v for k, v in (rd.progress() or {}).items() if k not in ("heartbeat", "pid", "hostname")}
    return run
