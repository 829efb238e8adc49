"""This process's place in a launch: its rank, the world size, and the few decisions every rank must take
together (stop now, skip this step, stop early), made with the launcher's own process group.

The launchers (torchrun, ``accelerate launch``, ``deepspeed``) say who a process is through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); the Trainer creates the process group. A decision one rank takes
alone (a Stop read from a file, a NaN in its shard of the batch) would leave the others waiting in the next
collective forever, so each is reduced over the group: if any rank says yes, every rank does. Outside a launch
(the kernel's thread, ``launcher: process``) each function answers for a world of one and imports nothing.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["rank", "local_rank", "world_size", "is_main", "is_distributed", "agree_any", "barrier",
           "broadcast_object"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


def rank() -> int:
    """This process's global rank (0 outside a launch)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its node: the GPU index it trains on."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    return max(1, _env_int("WORLD_SIZE", 1))


def is_main() -> bool:
    """Rank 0: the only process that writes the run directory."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether a process group of more than one rank is up (the Trainer started it)."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> Any:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":  # NCCL reduces only tensors on this rank's GPU
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree_any(flag: bool) -> bool:
    """True on every rank when it is true on any rank (an all-reduce of one number); ``flag`` alone outside a
    process group."""
    if not is_distributed():
        return bool(flag)
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Wait until every rank gets here (nothing outside a process group)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (a picklable object); ``value`` outside a process group."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]
