"""``python -m jupyter_ft.launch RUN_DIR``: train a run directory under the launcher its ``compute:`` names
(``process``, ``torchrun``, ``accelerate``, ``deepspeed``), supervised until every process of it has ended.

``%%finetune`` with a process launcher starts this in a session of its own, so the run outlives the kernel. On
another node of a multi-node run, start the same command with ``--node-rank N`` (the run directory, or a copy of
its ``run.json``, must be there). Exit status: the launcher's.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .config import FineTuneConfig
from .engine.launch import launch_plan
from .engine.supervise import Supervisor
from .errors import JupyterFTError
from .store import RunStore

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_ft.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the run's directory (it holds run.json)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--node-rank", type=int, default=None, help="this machine's node rank (multi-node)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model repository's own code (never taken from run.json)")
    parser.add_argument("--print", action="store_true", help="print the launch command and exit")
    args = parser.parse_args(argv)
    where = os.path.abspath(os.path.expanduser(args.run_dir))
    try:
        rd = RunStore(os.path.dirname(where)).open(os.path.basename(where))
        config = FineTuneConfig.from_record(rd.record.config, trust_remote_code=args.trust_remote_code)
    except (JupyterFTError, KeyError) as exc:
        print(f"jupyter-ft launch: {exc}", file=sys.stderr)
        return 2
    plan = launch_plan(config, rd.path, resume=args.resume, node_rank=args.node_rank)
    if args.print:
        print(plan.command)
        return 0
    if plan.topology.distributed and "JUPYTER_FT_DTYPE" not in os.environ:
        # every rank computes in the same dtype: measured once here, not by N ranks racing for the cores
        from .models import plan_training

        plan.env["JUPYTER_FT_DTYPE"] = plan_training(config).compute_dtype
    return Supervisor(rd, plan).run()


if __name__ == "__main__":  # pragma: no cover - run as a module
    sys.exit(main())
