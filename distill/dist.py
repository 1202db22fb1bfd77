"""The one distributed shim. Training code asks it for rank, world size, is-main, all-reduce and broadcast,
and hands it the model and optimizer to wrap; it never imports horovod or branches on the launcher.

Launcher -> backend, decided from the environment:
  mpirun / horovodrun (OMPI_COMM_WORLD_*, PMI_*, HOROVOD_RANK)  -> Horovod (DistributedOptimizer, broadcasts)
  torchrun / torch.distributed.launch (RANK, WORLD_SIZE)         -> DistributedDataParallel (gloo CPU, nccl GPU)
  srun with several tasks (SLURM_PROCID, SLURM_NTASKS)          -> DistributedDataParallel, master from the node list
  anything else                                                   -> a single process
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
from typing import Any

import torch
from torch import nn

from modeling import onednn
from stagekit.errors import InputError, PeerFailure

# A dead peer must not hang the others: every collective gives up after this long.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=45)


def detect_launcher(env: dict[str, str] | None = None) -> str:
    """`horovod`, `torchrun`, `slurm` or `single`, from the environment a launcher sets."""
    env = os.environ if env is None else env
    if any(k in env for k in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")):
        return "horovod"
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return "slurm"
    return "single"


def slurm_master_addr(nodelist: str) -> str:
    """First host of a SLURM node list: `node[003-005,7],gpu1` -> `node003`."""
    first = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if first is None:
        raise InputError(f"SLURM_JOB_NODELIST {nodelist!r}: cannot read a host from it")
    prefix, _, ranges = first.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


class Distributed:
    """Rank, world size and collectives over whichever backend the launcher implies."""

    def __init__(self, backend: str | None = None):
        self.launcher = backend or detect_launcher()
        self.device = torch.device("cpu")
        self._hvd = None
        if self.launcher == "horovod":
            try:
                import horovod.torch as hvd
            except ImportError as e:
                raise InputError("launched by mpirun/horovodrun but Horovod is not installed "
                                 "(run `make setup`; see its message on the Horovod build)") from e
            hvd.init()
            self._hvd = hvd
            self.rank, self.world_size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        elif self.launcher in ("torchrun", "slurm"):
            if self.launcher == "slurm":
                os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
                os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
                os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
                os.environ.setdefault("MASTER_ADDR", slurm_master_addr(os.environ.get("SLURM_JOB_NODELIST", socket.gethostname())))
                os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))
            self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            use_cuda = torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
        else:
            self.rank, self.world_size, self.local_rank = 0, 1, 0
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
        elif self.world_size > 1:
            # Ranks sharing a machine split its cores; each taking all of them would oversubscribe it.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self._local_world_size()))

    def _local_world_size(self) -> int:
        if self._hvd is not None:
            return self._hvd.local_size()
        for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
            if os.environ.get(key, "").isdigit():
                return int(os.environ[key])
        return self.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        if self._hvd is not None:
            return "horovod"
        if self.launcher in ("torchrun", "slurm"):
            return torch.distributed.get_backend()
        return "single"

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer, accumulation_steps: int = 1):
        """The model and optimizer to train with: gradients averaged over ranks, ranks starting identical."""
        if self._hvd is not None:
            optimizer = self._hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                                       backward_passes_per_step=accumulation_steps)
            return model, optimizer
        if self.world_size > 1:
            ids = [self.local_rank] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model, optimizer

    @property
    def linear_products(self) -> str:
        """What computes linear products inside compute() ("onednn" on CPU, else "default"); for summaries."""
        return onednn.backend(self.device)

    def compute(self):
        """The context for forward passes: bf16 autocast on GPUs that support it (no loss scaling needed); on CPU
        full precision, with the linear products computed by oneDNN (modeling/onednn.py)."""
        if self.device.type == "cpu":
            return onednn.products(self.device)
        enabled = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def accumulating(self, model: nn.Module, last: bool):
        """Context for one micro-batch's backward: gradients are only exchanged on the last one."""
        if not last and isinstance(model, nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()  # Horovod counts backward passes itself (backward_passes_per_step)

    def step(self, optimizer: torch.optim.Optimizer, parameters, max_grad_norm: float) -> None:
        """Clip the averaged gradients, then update. Horovod averages asynchronously: wait for it first."""
        params = list(parameters)
        if self._hvd is not None:
            optimizer.synchronize()
            nn.utils.clip_grad_norm_(params, max_grad_norm)
            with optimizer.skip_synchronize():
                optimizer.step()
        else:
            nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """A small picklable object from every rank, in rank order."""
        if self.world_size == 1:
            return [obj]
        if self._hvd is not None:
            return self._hvd.allgather_object(obj)
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def peer_failure(self, exc: BaseException) -> PeerFailure | None:
        """A clear error when `exc` means another rank died (connection lost, collective timed out)."""
        if self.world_size == 1:
            return None
        hvd_error = getattr(self._hvd, "HorovodInternalError", ()) if self._hvd is not None else ()
        dist_error = getattr(torch.distributed, "DistBackendError", ())
        text = str(exc)
        lost = isinstance(exc, hvd_error or ()) or isinstance(exc, dist_error or ()) or any(
            s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                "Timed out", "timed out", "Horovod has been shut down"))
        if not lost:
            return None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return PeerFailure(f"rank {self.rank} of {self.world_size} ({self.backend}) lost a peer during a collective "
                           f"(another rank died or was killed): {first[:200]}")

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Make every rank start from rank 0's parameters and optimizer state (DDP does it when wrapping)."""
        if self._hvd is not None:
            self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
            self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Mean of scalar metrics over ranks."""
        if self.world_size == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64)
        if self._hvd is not None:
            t = self._hvd.allreduce(t, op=self._hvd.Average, name="metrics")
        else:
            torch.distributed.all_reduce(t)
            t /= self.world_size
        return dict(zip(values, t.tolist()))

    def barrier(self) -> None:
        if self._hvd is not None:
            self._hvd.allreduce(torch.zeros(1), name="barrier")
        elif self.world_size > 1:
            torch.distributed.barrier()

    def shutdown(self) -> None:
        if self._hvd is not None:
            self._hvd.shutdown()
        elif self.launcher in ("torchrun", "slurm") and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
