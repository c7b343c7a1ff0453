"""Data parallelism under torchrun: several processes, each holding a share of the examples, all
taking the same optimizer steps.

`torchrun` starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address;
`init_from_env` joins them into one process group (NCCL on CUDA, gloo on the CPU). Example `i`
belongs to process `i % size` (strided shards, so every process gets a fair mix of every split).
A plain, single process is a `World` of size 1, for which every operation below does nothing:
the single-process path and the distributed one are the same code.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

try:
    import torch
    import torch.distributed as dist
except ImportError:  # an install without torch (the ONNX Runtime backend): one process, nothing to join
    torch = dist = None

from .errors import UserError, env_number

DEFAULT_TIMEOUT_S = 1800  # longest wait at a collective before a stuck job fails (GPTCLASSIFY_DIST_TIMEOUT)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The one process that logs and writes files."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """Indices of the examples (of `n`) this process holds."""
        return range(self.rank, n, self.size)

    def contiguous_shard(self, n: int) -> range:
        """A contiguous block of `n` items, for outputs that are joined in order."""
        return range(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def describe(self) -> str:
        backend = f" ({dist.get_backend()})" if dist.is_initialized() else ""
        return f"{self.size} process{'es' if self.size > 1 else ''}{backend}"


_world = World()


def launched() -> bool:
    """Whether a launcher (torchrun) started this process. A job of one process joins its process
    group too, so that it runs as each of N does (NCCL on a GPU, gloo on a CPU)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def restarted() -> bool:
    """Whether torchrun restarted this job after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (once); a size-1 World without it."""
    global _world
    if not launched():
        return _world
    if dist is None:
        raise UserError("torchrun starts processes that share a model: that needs torch, which is not installed")
    if not dist.is_initialized():
        seconds = env_number("GPTCLASSIFY_DIST_TIMEOUT", DEFAULT_TIMEOUT_S, "a number of seconds", minimum=1)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":  # one GPU per local rank, unless --device names one
            torch.cuda.set_device(device if device.index is not None else int(os.environ.get("LOCAL_RANK", 0)))
        try:
            dist.init_process_group(backend, store=rendezvous_store(seconds), rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]), timeout=timedelta(seconds=seconds))
        except (RuntimeError, ValueError) as e:
            raise UserError(f"could not join the other processes: {str(e).splitlines()[0][:200]}") from None
        _world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return _world


def peer_failure() -> type:
    """What a collective raises when another process has died or the timeout has passed."""
    return getattr(dist, "DistError", RuntimeError) if launched() else ()


def rendezvous_store(seconds: float):
    """The key-value store the processes meet in: torchrun's own (or rank 0's), under a prefix of
    its own for each restart, so that processes of a restarted job never read the addresses the
    processes before the restart left there."""
    timeout = timedelta(seconds=seconds)
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=not agent_hosts_it and os.environ["RANK"] == "0", timeout=timeout)
    return dist.PrefixStore(f"gptclassify/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def current() -> World:
    return _world


@contextmanager
def alone():
    """Within it, this process is a world of its own: every collective below does nothing, and
    every example is this process's. For work shared out whole (tune's trials), not split by example."""
    global _world
    saved, _world = _world, World()
    try:
        yield
    finally:
        _world = saved


def all_gather_objects(obj) -> list:
    """Every process's `obj` (JSON-like), in rank order; [obj] alone."""
    if _world.size == 1:
        return [obj]
    out = [None] * _world.size
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    global _world
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `t` over all processes (t itself when alone)."""
    if _world.size == 1:
        return t
    moved = t.to(_comm_device())
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(t.device)


def all_max(value: int) -> int:
    """The largest of every process's `value`."""
    if _world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def sum_gradients(params: list[torch.Tensor], local_loss: torch.Tensor | None) -> torch.Tensor:
    """Add up every process's gradients (one all-reduce of one flat buffer) and losses; the global
    batch's loss comes back as a one-element tensor, left where it is (reading it would wait for the GPU).

    Each process's loss is its examples' share of the global batch's mean (their summed loss
    divided by the global batch size), so the sums are exactly the single-process gradient and
    loss. A process holding none of a batch's examples adds zeros.
    """
    value = torch.zeros(1) if local_loss is None else local_loss.detach().float().reshape(1)
    if _world.size == 1:
        return value
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [value.to(grads[0].device)])
    flat = all_reduce_sum(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).to(p.dtype)
        offset += n
    return flat[-1:]


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Rows held as `World.shard(n)` by each process, put back together in global order everywhere."""
    if _world.size == 1:
        return local
    out = torch.zeros(n, *local.shape[1:], dtype=torch.float64)
    out[_world.rank::_world.size] = local.double()
    return all_reduce_sum(out).to(local.dtype)  # every row has one non-zero contribution: exact


def same_rng_everywhere() -> None:
    """Give every process rank 0's global RNG state, so all draw the same data order."""
    if _world.size == 1:
        return
    state = torch.get_rng_state().to(_comm_device())
    dist.broadcast(state, src=0)
    torch.set_rng_state(state.cpu())


def barrier() -> None:
    if _world.size > 1:
        dist.barrier()
