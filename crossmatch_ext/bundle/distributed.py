"""The distributed set-up of a ``torchrun`` run (``multi_gpu_train.yaml``): device, rank, process group, networks."""

from __future__ import annotations

import os

import torch

from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork

__all__ = [
    "distributed_network",
    "distributed_train_network",
    "end_distributed",
    "init_distributed",
    "process_count",
    "process_device",
    "process_rank",
]


def process_rank() -> int:
    """This process's rank in the default process group, 0 when training in one process."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def process_count() -> int:
    """The number of processes in the default process group, 1 when training in one process."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(device: torch.device | str) -> None:
    """Join the process group started by ``torchrun`` (NCCL on CUDA, Gloo on the CPU) and select this process's
    GPU. Does nothing when the group exists already."""
    import torch.distributed as dist

    device = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def end_distributed() -> None:
    """Wait for every process, then leave the process group (the ``finalize`` step of a ``torchrun`` run)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def distributed_network(network: torch.nn.Module, device: torch.device | str, sync_batchnorm: bool = True
                        ) -> torch.nn.Module:
    """The bare network on this process's device, its batch norms synchronised over the processes when
    ``sync_batchnorm`` is set and CUDA is available (PyTorch's ``SyncBatchNorm`` needs CUDA)."""
    device = torch.device(device)
    if sync_batchnorm and device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return network.to(device)


def distributed_train_network(network: torch.nn.Module, perturbation: FeaturePerturbation,
                              device: torch.device | str) -> torch.nn.Module:
    """The training network (network + feature perturbation) wrapped in ``DistributedDataParallel`` (buffers not
    broadcast: each process keeps its batch-norm statistics, as the authors' multi-GPU runs)."""
    device = torch.device(device)
    module = FeaturePerturbedNetwork(network, perturbation).to(device)
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
