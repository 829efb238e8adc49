"""The command that trains a run outside the kernel, built from its ``compute:`` section.

Every launcher ends in the same entry point, ``python -m jupyter_ft.worker RUN_DIR``: ``process`` runs it as is;
``torchrun``, ``accelerate launch`` and ``deepspeed`` start it once per rank and set up the process group. No
launcher or collective of our own: this module only spells those launchers' own command lines (the dry run shows
them, ``run.json`` keeps them, a second node runs the same one with its node rank).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FineTuneConfig
from ..config.compute import Topology, split_global_batch, topology

__all__ = ["LaunchPlan", "launch_plan", "free_port"]


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LaunchPlan:
    """How a run is started: the argv, the environment it adds, and the batch split it implies."""

    topology: Topology
    argv: list[str]
    node_rank: int = 0
    env: dict[str, str] = field(default_factory=dict)
    per_device_batch: int = 1
    grad_accum_per_rank: int = 1

    @property
    def examples_per_step(self) -> int:
        """The global batch: per-device batch x accumulation x world size, whatever the world size."""
        return self.per_device_batch * self.grad_accum_per_rank * self.topology.world_size

    @property
    def command(self) -> str:
        """The command line as a shell would take it (with the environment it sets)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)

    def to_dict(self) -> dict[str, Any]:
        """What ``run.json`` records under ``launch``."""
        t = self.topology
        return {"launcher": t.launcher, "strategy": t.strategy, "processes": t.processes, "nodes": t.nodes,
                "world_size": t.world_size, "command": self.command, "per_device_batch": self.per_device_batch,
                "grad_accum_per_rank": self.grad_accum_per_rank, "examples_per_step": self.examples_per_step}


def launch_plan(config: FineTuneConfig, run_path: str | os.PathLike[str], *, resume: bool = False,
                node_rank: int | None = None, python: str | None = None) -> LaunchPlan:
    """The launch of ``config``'s run in ``run_path`` (``node_rank`` overrides the config's, for another node)."""
    c = config.compute
    top = topology(config)
    py = python or sys.executable
    worker = ["-m", "jupyter_ft.worker", str(Path(run_path))] + (["--resume"] if resume else [])
    if config.model.trust_remote_code:
        worker.append("--trust-remote-code")
    node = c.node_rank if node_rank is None else node_rank
    endpoint = (c.rdzv_endpoint or "").strip()
    # one node without an endpoint: a free port here, so two runs side by side never collide
    host, _, port = endpoint.rpartition(":") if endpoint else ("127.0.0.1", "", str(free_port()))
    if top.launcher == "torchrun":
        argv = [py, "-m", "torch.distributed.run", "--nproc_per_node", str(top.processes)]
        if top.nodes > 1:
            # torchrun's static rendezvous (a c10d store at the endpoint): node_rank 0 holds global rank 0, the one
            # writer of the run directory; the elastic one would hand rank 0 to whichever node it sorts first
            argv += ["--nnodes", str(top.nodes), "--node_rank", str(node), "--master_addr", host,
                     "--master_port", port]
        else:
            argv += ["--standalone"]  # a free port on this machine: two runs side by side never collide
        argv += worker
    elif top.launcher == "accelerate":
        argv = [py, "-m", "accelerate.commands.launch"]
        if c.accelerate_config:
            argv += ["--config_file", str(Path(c.accelerate_config).expanduser())]
        # --multi_gpu starts one process per rank with or without a GPU (on a CPU they use gloo); --cpu would
        # silently start ONE process whatever --num_processes says
        argv += ["--multi_gpu", "--num_processes", str(top.world_size), "--num_machines", str(top.nodes),
                 "--machine_rank", str(node), "--main_process_ip", host or "127.0.0.1", "--main_process_port",
                 port, "--dynamo_backend", "no", "--mixed_precision", "no"]
        argv += worker  # -m jupyter_ft.worker RUN_DIR: accelerate's own -m takes the module
    elif top.launcher == "deepspeed":
        argv = [py, "-m", "deepspeed.launcher.runner", "--num_nodes", str(top.nodes), "--num_gpus",
                str(top.processes)]
        if top.nodes > 1:
            argv += ["--node_rank", str(node), "--master_addr", host, "--master_port", port]
        else:
            argv += ["--master_port", port]
        argv += ["--module", "jupyter_ft.worker", str(Path(run_path))] + worker[3:]
    else:  # process
        argv = [py] + worker
    env: dict[str, str] = {}
    if c.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in c.devices)
    if top.distributed and not top.gpus and "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks share the cores: one share each, or N ranks each starting every core's worth of threads
        # would crawl (the benchmark measures this)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, top.processes)))
    split = split_global_batch(config.training.batch_size, config.training.grad_accum, top.world_size)
    per_device, accum = split if split is not None else (config.training.batch_size, config.training.grad_accum)
    return LaunchPlan(top, argv, node, env, per_device, accum)
