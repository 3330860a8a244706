"""Process-group set-up for the three ways the trainer is started.

- ``deepspeed [launcher args] launch/train.py ...`` and ``torchrun ...`` set RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR and MASTER_PORT (one process per GPU, or several CPU processes);
- a plain ``python launch/train.py ...`` sets none: it is then a one-process job, and the trainer
  sets exactly what a launcher would have set for one process (RANK=0, WORLD_SIZE=1,
  LOCAL_RANK=0, MASTER_ADDR=127.0.0.1, MASTER_PORT=a free port) and says so: DeepSpeed reads
  LOCAL_RANK from the environment and would otherwise try MPI discovery. Variables the user set
  are never changed.

Backend: NCCL when CUDA is available, gloo on CPU.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True, kw_only=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_launcher() -> bool:
    return all(v in os.environ for v in LAUNCHER_ENV)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> DistInfo:
    """Initialise torch.distributed (and DeepSpeed's view of it); return this process's place."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if not any(v in os.environ for v in LAUNCHER_ENV):
            single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
            single |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
            os.environ.update(single)
            print(f"train: no launcher environment; running as one process ({single})")
        elif not launched_by_launcher():
            missing = [v for v in LAUNCHER_ENV if v not in os.environ]
            raise RuntimeError(f"incomplete launcher environment: {missing} not set")
        deepspeed.init_distributed(dist_backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # torchrun sets LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", str(world))))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        device=device,
    )


def cpu_threads_per_rank(local_world_size: int, requested: int = 0) -> int:
    """Intra-op threads per process: the request, or the cores shared among this node's ranks."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, local_world_size))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def close() -> None:
    """Destroy the process group, through DeepSpeed when it holds it: DeepSpeed caches its
    groups, and a second run in the same process (a notebook, a sweep, a test) would otherwise
    find the destroyed ones."""
    if not dist.is_initialized():
        return
    import deepspeed.comm as ds_comm

    rank = dist.get_rank()
    if ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    else:
        dist.destroy_process_group()
    remove_cpu_allreduce_buffer(rank)


def cpu_allreduce_buffer(rank: int) -> Path:
    """The shared-memory segment DeepSpeed's CPU accelerator maps for its all-reduce (one per rank,
    named in deepspeed/ops/csrc/cpu/comm/shm.cpp ``shm_initialize``: uid, master address and port,
    rank). DeepSpeed never unlinks it, so every CPU run would leave 2 x 66 MiB per rank in
    /dev/shm until the machine's shared memory is full."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"


def remove_cpu_allreduce_buffer(rank: int) -> None:
    """Unlink this rank's segment once the group is gone: the peers mapped it at start-up, and a
    mapping outlives the name, so nothing still running loses it."""
    cpu_allreduce_buffer(rank).unlink(missing_ok=True)
