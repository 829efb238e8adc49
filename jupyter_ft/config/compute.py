"""The ``compute:`` section checked against the others and against this machine, and what it resolves to.

Kept apart from the field-by-field checks because these read the machine (the visible GPUs, whether DeepSpeed
is installed) and cross sections (4-bit storage under FSDP/ZeRO-3, the global batch split over the ranks). Like
the rest of ``config`` it never imports torch: GPUs are counted from the driver's ``/proc`` entries and
``CUDA_VISIBLE_DEVICES``, and a missing package is found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Problem
from .checks import check_int, choice_problem
from .choices import LAUNCHERS, MULTI_PROCESS_LAUNCHERS, OFFLOADS, QUANT_STORAGES, STRATEGIES, ZERO_STAGES
from .fields import _doc

if TYPE_CHECKING:  # pragma: no cover
    from .schema import FineTuneConfig

__all__ = ["ComputeConfig", "Topology", "compute_problems", "topology", "visible_gpus", "split_global_batch"]

@dataclass
class ComputeConfig:
    """Where the run trains: a thread of this kernel (one device), a process of its own, or many processes, GPUs
    and nodes under a real launcher (torchrun, ``accelerate launch``, ``deepspeed``). Process runs outlive the
    kernel: a new kernel lists them, re-attaches a dashboard and stops them by their run directory."""

    launcher: str = _doc(
        "thread", "``thread``: a background thread of this kernel (one device). ``process``: one process of its "
        "own, which outlives the kernel and hands all its memory back when it ends. ``torchrun``, ``accelerate``, "
        "``deepspeed``: that launcher starts ``processes`` workers per node.", choices=LAUNCHERS)
    processes: int | str = _doc(
        "auto", "Worker processes per node. ``auto``: one per visible GPU (``devices``), or 1 on a machine without "
        "one. More than one on a CPU trains with gloo, one CPU share each.")
    devices: list[int] | None = _doc(
        None, "Which GPUs the workers use (``CUDA_VISIBLE_DEVICES``), e.g. ``[0, 1]``; ``null``: every visible "
        "one.")
    strategy: str = _doc(
        "auto", "How the workers share the model: ``ddp`` (a full copy each, gradients averaged), ``fsdp`` "
        "(parameters, gradients and optimizer state sharded), ``deepspeed`` (ZeRO, stage ``zero_stage``). "
        "``auto``: ``deepspeed`` under the deepspeed launcher, else ``ddp``.", choices=STRATEGIES)
    zero_stage: int = _doc(
        2, "DeepSpeed ZeRO stage: 1 shards the optimizer state, 2 also the gradients, 3 also the parameters.",
        choices=ZERO_STAGES)
    offload: str = _doc(
        "none", "``cpu`` keeps the optimizer state (ZeRO, FSDP) in CPU memory: a bigger model per GPU, slower "
        "steps.", choices=OFFLOADS)
    nodes: int = _doc(1, "Machines taking part; every node runs the same config with its own ``node_rank``.")
    node_rank: int = _doc(0, "This machine's index among ``nodes`` (0 holds rank 0, which writes the run directory).")
    rdzv_endpoint: str | None = _doc(
        None, "``host:port`` every node reaches to meet the others (torchrun's c10d rendezvous; rank 0's machine). "
        "Needed when ``nodes`` > 1.")
    deepspeed_config: str | None = _doc(
        None, "Your own DeepSpeed JSON file, passed to the Trainer as is (instead of the one built from "
        "``zero_stage`` and ``offload``).")
    accelerate_config: str | None = _doc(
        None, "Your own ``accelerate config`` YAML file for ``launcher: accelerate`` (instead of the generated "
        "one).")


_ENDPOINT = re.compile(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")


def visible_gpus() -> int:
    """How many CUDA devices this process would see, without importing torch: the NVIDIA driver's entries
    in ``/proc`` (Linux), narrowed by ``CUDA_VISIBLE_DEVICES``; 0 on a machine without one."""
    try:
        present = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        present = 0
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return present
    wanted = [d for d in mask.split(",") if d.strip() and d.strip() != "-1"]
    return min(present, len(wanted))


@dataclass(frozen=True)
class Topology:
    """What a valid ``compute:`` section resolves to on this machine."""

    launcher: str
    strategy: str  # "none" for the thread and process launchers
    processes: int  # per node
    nodes: int
    gpus: int  # visible to the workers
    zero_stage: int = 2

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @property
    def distributed(self) -> bool:
        return self.launcher in MULTI_PROCESS_LAUNCHERS

    @property
    def shards_parameters(self) -> bool:
        """FSDP or ZeRO-3: every rank holds a slice of each weight (a forward needs all ranks)."""
        return self.strategy == "fsdp" or (self.strategy == "deepspeed" and self.zero_stage == 3)


def topology(config: "FineTuneConfig") -> Topology:
    """The launcher, strategy, processes per node and world size of a validated config on this machine."""
    c = config.compute
    gpus = len(c.devices) if c.devices else visible_gpus()
    if c.launcher in MULTI_PROCESS_LAUNCHERS:
        processes = c.processes if isinstance(c.processes, int) else max(1, gpus)
        strategy = c.strategy if c.strategy != "auto" else ("deepspeed" if c.launcher == "deepspeed" else "ddp")
        nodes = c.nodes
    else:
        processes, strategy, nodes = 1, "none", 1
    return Topology(c.launcher, strategy, processes, nodes, gpus, c.zero_stage)


def split_global_batch(batch_size: int, grad_accum: int, world_size: int) -> tuple[int, int] | None:
    """``(per-device batch, accumulation per rank)`` whose product times ``world_size`` is the config's global
    batch ``batch_size x grad_accum``, so a 1-process and an N-process run take the same examples per optimizer
    step and their curves compare. Accumulation is divided first (the per-device batch, and so the memory per
    rank, stays what the user chose); None when the global batch does not split evenly."""
    if world_size <= 1:
        return batch_size, grad_accum
    for per_device in range(batch_size, 0, -1):  # the largest per-device batch that splits evenly
        if batch_size % per_device:
            continue
        rest = (batch_size // per_device) * grad_accum
        if rest % world_size == 0:
            return per_device, rest // world_size
    return None


def compute_problems(config: "FineTuneConfig") -> list[Problem]:
    """Every problem with ``compute:`` and its interplay with the other sections, on this machine."""
    p: list[Problem] = []
    c = config.compute
    if c.launcher not in LAUNCHERS:
        p.append(choice_problem("compute.launcher", c.launcher, LAUNCHERS))
    if c.processes != "auto":
        check_int(p, "compute.processes", c.processes, lo=1, hi=1024, hint="A number of workers per node, or auto")
    if c.devices is not None and not (isinstance(c.devices, list) and c.devices and all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1024 for d in c.devices)):
        p.append(Problem("compute.devices", "must be a list of GPU indices or null", c.devices, "e.g. [0, 1]"))
    if c.strategy not in STRATEGIES:
        p.append(choice_problem("compute.strategy", c.strategy, STRATEGIES))
    if c.zero_stage not in ZERO_STAGES or isinstance(c.zero_stage, bool):
        p.append(Problem("compute.zero_stage", "must be 1, 2 or 3", c.zero_stage,
                         "1 shards the optimizer state, 2 also gradients, 3 also parameters"))
    if c.offload not in OFFLOADS:
        p.append(choice_problem("compute.offload", c.offload, OFFLOADS))
    check_int(p, "compute.nodes", c.nodes, lo=1, hi=4096)
    check_int(p, "compute.node_rank", c.node_rank, lo=0, hi=4095)
    for name in ("rdzv_endpoint", "deepspeed_config", "accelerate_config"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            p.append(Problem(f"compute.{name}", "must be a non-empty string or null", value))
    q = config.quantization
    if q.quant_storage not in QUANT_STORAGES:
        p.append(choice_problem("quantization.quant_storage", q.quant_storage, QUANT_STORAGES))
    if p:
        return p  # the cross checks below read the fields as valid
    return _cross_problems(config)


def _cross_problems(config: "FineTuneConfig") -> list[Problem]:
    p: list[Problem] = []
    c, t = config.compute, config.training
    multi = c.launcher in MULTI_PROCESS_LAUNCHERS
    if not multi:
        one = f"launcher: {c.launcher} trains in one process on one device"  # the reason, after a colon
        use = "Use launcher: torchrun (or accelerate, deepspeed) for more"
        if isinstance(c.processes, int) and c.processes > 1:
            p.append(Problem("compute.processes", f"must be 1 or auto: {one}", c.processes, use))
        if c.nodes > 1:
            p.append(Problem("compute.nodes", f"must be 1: {one}", c.nodes, use))
        if c.strategy in ("fsdp", "deepspeed"):
            p.append(Problem("compute.strategy", f"{c.strategy} needs a launcher of many processes", c.strategy,
                             "Use launcher: torchrun (processes: 1 is fine) or accelerate"))
    if c.launcher == "deepspeed" and c.strategy not in ("auto", "deepspeed"):
        p.append(Problem("compute.strategy", "must be deepspeed (or auto) with launcher: deepspeed", c.strategy,
                         "Use launcher: torchrun for ddp or fsdp"))
    if c.launcher != "thread":
        for name in ("source", "eval_source"):
            value = getattr(config.data, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                p.append(Problem(f"data.{name}", f"is data in this kernel's memory ({type(value).__name__}), which "
                                 f"a process of its own cannot read (compute.launcher: {c.launcher})", None,
                                 "Save it to a file first, e.g. df.to_json('train.jsonl', orient='records', "
                                 "lines=True), and give its path"))
    top = topology(config)
    if top.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        p.append(Problem("compute.strategy", "DeepSpeed is not installed", top.strategy,
                         "Run: pip install deepspeed (on a CPU-only machine: DS_BUILD_OPS=0 pip install deepspeed)"))
    if c.offload == "cpu" and top.strategy not in ("deepspeed", "fsdp"):
        p.append(Problem("compute.offload", "cpu offload needs strategy: deepspeed or fsdp", c.offload,
                         "Set compute.strategy: deepspeed (ZeRO) or fsdp, or offload: none"))
    if c.node_rank >= c.nodes:
        p.append(Problem("compute.node_rank", f"must be below compute.nodes ({c.nodes})", c.node_rank,
                         "Node ranks count from 0"))
    if c.nodes > 1 and c.rdzv_endpoint is None:
        p.append(Problem("compute.rdzv_endpoint", f"is required with {c.nodes} nodes", None,
                         "Give host:port of rank 0's machine, reachable from every node, e.g. 10.0.0.1:29500"))
    if c.rdzv_endpoint is not None and not _ENDPOINT.fullmatch(c.rdzv_endpoint.strip()):
        p.append(Problem("compute.rdzv_endpoint", "must be host:port", c.rdzv_endpoint, "e.g. 10.0.0.1:29500"))
    if top.gpus and multi and top.processes > top.gpus:
        where = f"compute.devices lists {top.gpus}" if c.devices else f"{top.gpus} GPU(s) are visible"
        p.append(Problem("compute.processes", f"asks for more processes than GPUs ({where})", c.processes,
                         f"Use processes: auto or at most {top.gpus}"))
    if c.devices and not multi and len(c.devices) > 1:
        p.append(Problem("compute.devices", f"lists {len(c.devices)} GPUs for one process", c.devices,
                         "Give one index, or use launcher: torchrun"))
    if multi and top.strategy == "fsdp" and not top.gpus:
        p.append(Problem("compute.strategy", "fsdp needs GPUs: accelerate, which the Trainer trains with, runs FSDP "
                         "only there (on a CPU it would quietly train as ddp)", c.strategy,
                         "On a CPU use ddp, or deepspeed with zero_stage: 3 to shard the parameters"))
    q = config.quantization
    if multi and top.shards_parameters and q.method == "8bit":
        p.append(Problem("quantization.method", f"8-bit weights cannot be sharded ({_sharding(top)})", q.method,
                         "Use 4bit-nf4 with quant_storage: auto, or none"))
    if multi and top.shards_parameters and q.method == "4bit-nf4" and q.quant_storage == "uint8":
        p.append(Problem("quantization.quant_storage", f"must be the compute dtype under {_sharding(top)}",
                         q.quant_storage, "Use auto (the compute dtype) or bfloat16: FSDP and ZeRO-3 shard "
                         "parameters of one dtype"))
    for name, wanted in (("deepspeed_config", "deepspeed"), ("accelerate_config", "accelerate")):
        value = getattr(c, name)
        if value is None:
            continue
        if not Path(value).expanduser().is_file():
            p.append(Problem(f"compute.{name}", "is not a file", value, "Give the path of an existing file"))
        if name == "deepspeed_config" and top.strategy != "deepspeed":
            p.append(Problem("compute.deepspeed_config", "is used only with strategy: deepspeed", value,
                             "Set compute.strategy: deepspeed, or drop the file"))
        if name == "accelerate_config" and c.launcher != wanted:
            p.append(Problem("compute.accelerate_config", "is used only with launcher: accelerate", value,
                             "Set compute.launcher: accelerate, or drop the file"))
    if multi and split_global_batch(_int(t.batch_size), _int(t.grad_accum), top.world_size) is None:
        p.append(Problem("training.batch_size", f"the global batch, batch_size x grad_accum ({t.batch_size} x "
                         f"{t.grad_accum}), must split evenly over the world size {top.world_size}", t.batch_size,
                         "The global batch is the same on any number of processes; make it a multiple of "
                         f"{top.world_size}"))
    return p


def _sharding(top: Topology) -> str:
    return "FSDP" if top.strategy == "fsdp" else "ZeRO-3"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
