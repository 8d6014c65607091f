"""distill's processes: torchrun's rank and world, and the two collectives a step needs.

Imports torch only.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def setup(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # The loss counts and step statistics are reduced as CPU tensors: on GPUs they go through gloo, the
        # gradients through NCCL (NCCL alone refuses CPU tensors).
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum `t` over ranks in place (nothing on one process)."""
    if world > 1:
        dist.all_reduce(t)
    return t


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def sum_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Sum gradients over ranks in one flat buffer.

    Each rank's loss is already divided by the global row count, so the sum is
    the gradient of the global loss. (We do not use DDP's wrapper: a step may
    run the student twice, over its own and over the split tokens, before one
    backward.)
    """
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def checkpoint_due(done: int, max_steps: int, every: int, minutes: float, last_saved: float, is_main: bool,
                   world: int) -> bool:
    """Every `every` steps, when `minutes` of wall time have passed since the last one, and at the end."""
    if every <= 0 and minutes <= 0:
        return False
    if done == max_steps or (every > 0 and done % every == 0):
        return True
    if minutes <= 0:
        return False
    # rank 0's clock decides, so that every rank saves (and waits) at the same step
    flag = torch.tensor([1.0 if is_main and time.time() - last_saved >= 60 * minutes else 0.0], dtype=torch.float64)
    all_reduce(flag, world)
    return bool(flag.item() > 0)
