"""Data-parallel training under ``torchrun``: one process per device, gradients averaged across them.

``torchrun --nproc-per-node N $(which pyro-adgm) train ...`` starts N copies of the same command with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init` reads them and joins the
process group (NCCL on CUDA, gloo on the CPU). Without them (a plain ``pyro-adgm train``) it returns a world of
one process and nothing here communicates. The pieces a training loop needs:

- the data: every rank draws the same seeded per-epoch order (:func:`epoch_permutation`, or the loop's own
  generator seeded the same way on every rank), cuts it into global batches of N x B images and keeps its own
  :func:`shard` of each, so that the union of the ranks' batches is the batch one process with N x B would draw;
- the objective: each rank's plates keep the data set's sizes, so its loss is the full-data-scale estimate of
  J^alpha from its own shard, and the mean of the ranks' gradients is the gradient of the estimate from the union
  (exactly when the shards are equal in size; otherwise the mean of N unbiased estimates). Batch-norm statistics
  are those of each rank's shard, as with any data parallelism without synchronised batch norm;
- the step: :class:`DataParallelOptim` wraps the Pyro optimiser (``SVI(..., DataParallelOptim(pyro.optim.AdamW(
  args)), TraceEnum_ELBO(...))``): before stepping it averages the gradients of all parameters across ranks in
  one all-reduce, then steps them with one multi-tensor optimiser per set of settings instead of Pyro's one per
  parameter (faster on one process too); its state is Pyro's per-parameter format, so checkpoints load either way
  and in a run of any other size;
- the rest: :func:`broadcast_module` (rank 0's weights to all at the start), :func:`average_buffers` (batch-norm
  running statistics before evaluating or saving), :func:`mean_across_ranks`, :func:`from_main` (rank 0's value,
  e.g. its decision to stop, on every rank), :func:`barrier`, :func:`is_main_process` (only rank 0 writes the
  run directory and evaluates), :func:`rank_seed`.

A peer that dies or stops answering makes the next collective fail, after at most ``timeout_s`` (gloo notices a
closed connection at once); the failure is raised as :class:`PeerFailure`, one line naming the rank and the
operation, and the run directory keeps the last checkpoint rank 0 wrote (checkpoints are written atomically).
torchrun itself stops the other processes with SIGTERM as soon as one fails; within :func:`sigterm_as_failure`
(the ``train`` command's) SIGTERM raises :class:`PeerFailure` too, so every rank ends with one line either way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyro
import torch
import torch.distributed as dist
from pyro.optim.optim import PyroOptim
from torch import nn

DEFAULT_TIMEOUT_S = 600.0  # a collective waits this long for a silent peer (rank 0's evaluation must fit in it)
ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class PeerFailure(RuntimeError):
    """A collective operation failed: another process of the run died, or did not answer within the timeout."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment describes more than one process (``torchrun --nproc-per-node N``, N > 1)."""
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1")) > 1


def environment_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank as torchrun's environment gives it (0 without torchrun); usable before :func:`init` and
    after :func:`shutdown`, e.g. to print a run's result once."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) if launched_by_torchrun(env) else 0


def device_for(device: torch.device | str, world: World) -> torch.device:
    """The device of this rank: ``cuda`` (or ``cuda:K``) means the GPU of its local rank in a distributed run."""
    device = torch.device(device)
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def init(device: torch.device | str = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None) -> World:
    """Join the process group that torchrun's environment variables describe and return this rank's world; a world of
    one process (no process group) without them. ``device``: the training device (NCCL for CUDA, gloo otherwise);
    on CUDA each rank is pinned to the GPU of its local rank."""
    global _joined
    env = os.environ if env is None else env
    if not launched_by_torchrun(env):
        return World(timeout_s=timeout_s)
    missing = [name for name in ENV_VARS if name not in env]
    if missing:
        raise PeerFailure(f"distributed run: WORLD_SIZE is {env['WORLD_SIZE']} but {', '.join(missing)} not set "
                          "(launch with torchrun --nproc-per-node N)")  # fmt: skip
    rank, world_size, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    world = World(rank, world_size, local_rank, backend, timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device_for(device, world))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout_s))  # fmt: skip
        except (RuntimeError, dist.DistError) as error:
            raise _failure(world, "joining the process group", error) from None
    _joined = world
    return world


_joined: World | None = None  # the world init joined, until shutdown


def current_world() -> World:
    """The world of the initialised process group (the one :func:`init` returned), or a world of one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    if _joined is not None:
        return _joined
    rank = dist.get_rank()
    return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)), dist.get_backend())


def is_main_process() -> bool:
    """True on rank 0 (the one that writes the run directory and evaluates) and in a run of one process."""
    return current_world().is_main


def shutdown() -> None:
    """Leave the process group (at the end of a run, or after a failure); nothing without one."""
    global _joined
    _joined = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def sigterm_as_failure(env: Mapping[str, str] | None = None):
    """A block of a process that torchrun started (nothing otherwise, or off the main thread) in which SIGTERM
    raises :class:`PeerFailure`: torchrun sends it to every process when one of them fails, and the process ends
    with one line instead of dying silently. If the block ends with an error, later SIGTERMs are ignored (the
    process is about to exit with that error's line); otherwise the handler before it is put back."""
    env = os.environ if env is None else env
    if not launched_by_torchrun(env) or threading.current_thread() is not threading.main_thread():
        yield
        return
    where = f"rank {env.get('RANK', '?')} of {env['WORLD_SIZE']}"

    def stopped(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the error on its way out is not interrupted
        raise PeerFailure(f"{where}: stopped by SIGTERM (torchrun stops every process of a run when one of them fails)")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)


def _failure(world: World, what: str, error: BaseException) -> PeerFailure:
    # gloo's and NCCL's messages start with a source location and go on with advice: keep the first sentence
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0].rstrip(".")
    return PeerFailure(f"rank {world.rank} of {world.world_size}: {what} failed: another process of the run stopped "
                       f"or did not answer within {world.timeout_s:g} s ({first})")  # fmt: skip


def _collective(world: World, what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        raise _failure(world, what, error) from None


# data


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of range(n) that depends only on (seed, epoch): the same on every rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def shard(indices: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """This rank's part of a global batch of indices: ``indices.tensor_split(world_size)[rank]``, so the ranks' parts
    are disjoint, cover the batch and differ in size by at most one (equal when N divides the batch)."""
    world = current_world() if world is None else world
    if not world.distributed:
        return indices
    return indices.tensor_split(world.world_size)[world.rank]


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """A seed for rank ``rank``'s own noise (dropout, draws of a and z, augmentation) in ``epoch``: different on every
    rank, so that the ranks' estimates are independent; ``rank_seed(seed, 0, 0) == seed``."""
    return seed if rank == 0 and epoch == 0 else ((seed * 1_000_003 + epoch) * 1_009 + rank) % 2**32


# collectives


def broadcast_module(module: nn.Module, world: World | None = None, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (at the start of a run, so all start alike)."""
    world = current_world() if world is None else world
    if not world.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            _collective(world, "broadcasting the model", dist.broadcast, tensor.data, src)


def average_buffers(module: nn.Module, world: World | None = None) -> None:
    """Average the batch-norm running means and variances across ranks, in place; each rank updates them from its
    own shard, so call this before evaluating or saving a checkpoint. Other buffers (the fixed p(y)) are the same
    on every rank and are left alone."""
    world = current_world() if world is None else world
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for b in (m.running_mean, m.running_var) if b is not None]  # fmt: skip
    if not world.distributed or not buffers:
        return
    with torch.no_grad():
        flat = torch.cat([b.reshape(-1) for b in buffers])
        _collective(world, "averaging the batch-norm statistics", dist.all_reduce, flat)
        flat /= world.world_size
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


def mean_across_ranks(value: float, world: World | None = None) -> float:
    """The mean of ``value`` over the ranks (e.g. an epoch's training loss); ``value`` itself in a run of one."""
    world = current_world() if world is None else world
    if not world.distributed:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device(world))
    _collective(world, "averaging a metric", dist.all_reduce, tensor)
    return float(tensor.item()) / world.world_size


def from_main(value, world: World | None = None):
    """Rank 0's ``value`` (any picklable object: a decision to stop, a report) on every rank; ``value`` itself in a
    run of one process. Every rank must call it; the others' ``value`` is ignored."""
    world = current_world() if world is None else world
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    _collective(world, "taking rank 0's decision", dist.broadcast_object_list, box, 0, device=_collective_device(world))
    return box[0]


def barrier(world: World | None = None) -> None:
    """Wait until every rank gets here (e.g. the others while rank 0 evaluates and writes the run directory)."""
    world = current_world() if world is None else world
    if world.distributed:
        tensor = torch.zeros(1, device=_collective_device(world))  # an all-reduce: it honours the timeout on gloo
        _collective(world, "waiting for the other processes", dist.all_reduce, tensor)


def _collective_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def all_reduce_gradients(params: Iterable[torch.Tensor], world: World | None = None) -> None:
    """Replace each parameter's gradient by its mean over the ranks, in one all-reduce of a flat buffer.

    ``params`` must be in the same order on every rank. A parameter without a gradient on some rank counts as a
    zero gradient there; one without a gradient on every rank keeps ``grad = None`` (the optimiser skips it)."""
    world = current_world() if world is None else world
    params = list(params)
    if not world.distributed or not params:
        return
    with torch.no_grad():
        reference = params[0]
        pieces = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=reference.dtype, device=reference.device)
        flat = torch.cat(pieces + [present])
        _collective(world, "averaging the gradients", dist.all_reduce, flat)
        flat /= world.world_size
        offset = 0
        for i, p in enumerate(params):
            chunk = flat[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
            if p.grad is not None:
                p.grad.copy_(chunk)
            elif flat[-len(params) + i] > 0:
                p.grad = chunk.clone()


# the optimiser


class DataParallelOptim(PyroOptim):
    """A Pyro optimiser that averages the gradients across ranks and then steps every parameter at once.

    Wraps a :class:`~pyro.optim.optim.PyroOptim` (e.g. ``pyro.optim.AdamW(args)``, ``args`` a dict or a function of
    the parameter's name) and uses its torch optimiser class and per-parameter settings. Parameters whose settings
    are equal share one torch optimiser (multi-tensor, ``foreach=True``), where Pyro keeps one per parameter: the
    same update, a few optimiser calls per step instead of one per parameter. ``get_state``/``set_state`` use Pyro's
    format ({parameter name: that parameter's torch optimiser state dict}), so a checkpoint written with either
    optimiser, by a run of any number of processes, loads into the other; ``optim_objs`` maps each parameter to the
    torch optimiser that steps it (set its ``param_groups``' rates to schedule them).
    """

    def __init__(self, pyro_optim: PyroOptim, world: World | None = None, *, foreach: bool = True):
        if pyro_optim.pt_clip_args:
            raise ValueError("DataParallelOptim: gradient clipping (clip_args) is not supported")
        super().__init__(pyro_optim.pt_optim_constructor, pyro_optim.pt_optim_args)
        self.world = world
        self.foreach = foreach
        self._state_waiting_to_be_consumed.update(pyro_optim._state_waiting_to_be_consumed)
        self._optimizers: list[torch.optim.Optimizer] = []

    def __call__(self, params, *args, **kwargs) -> None:
        store = pyro.get_param_store()
        params = sorted(params, key=store.param_name)  # the same order on every rank
        all_reduce_gradients(params, self.world if self.world is not None else current_world())
        new = [p for p in params if p not in self.optim_objs]
        if new:
            self._add(new, store)
        stepped = {id(self.optim_objs[p]): self.optim_objs[p] for p in params}
        for optimizer in stepped.values():
            optimizer.step(*args, **kwargs)

    def _add(self, params: list[torch.Tensor], store) -> None:
        groups: dict[tuple, tuple[dict, list[torch.Tensor]]] = {}
        for p in params:
            settings = dict(self._get_optim_args(p))
            if self.foreach and "fused" not in settings:
                settings.setdefault("foreach", True)
            key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
            groups.setdefault(key, (settings, []))[1].append(p)
        for settings, members in groups.values():
            optimizer = self.pt_optim_constructor(members, **settings)
            waiting = {i: self._state_waiting_to_be_consumed.pop(store.param_name(p), None) for i, p in enumerate(members)}
            saved = {i: s for i, s in waiting.items() if s is not None}
            if saved:
                first = saved[min(saved)]["param_groups"][0]
                hyper = {k: v for k, v in first.items() if k not in ("params", "foreach", "fused")}
                group = {**optimizer.param_groups[0], **hyper}
                group = {k: v for k, v in group.items() if k != "params"}
                optimizer.load_state_dict({"state": {i: s["state"][0] for i, s in saved.items() if 0 in s["state"]},
                                           "param_groups": [{**group, "params": list(range(len(members)))}]})  # fmt: skip
            self._optimizers.append(optimizer)
            for p in members:
                self.optim_objs[p] = optimizer

    def get_state(self) -> dict:
        """{parameter name: the state dict a torch optimiser of that one parameter would have} (Pyro's format)."""
        store = pyro.get_param_store()
        out = {}
        for optimizer in self._optimizers:
            full = optimizer.state_dict()
            group = full["param_groups"][0]
            settings = {k: v for k, v in group.items() if k != "params"}
            for index, p in zip(group["params"], optimizer.param_groups[0]["params"]):
                state = {0: full["state"][index]} if index in full["state"] else {}
                out[store.param_name(p)] = {"state": state, "param_groups": [{**settings, "params": [0]}]}
        return out

    def set_state(self, state_dict: dict) -> None:
        """Load a :meth:`get_state` (this class's or Pyro's); applied to each parameter when it is first stepped."""
        if self._optimizers:
            raise RuntimeError("DataParallelOptim.set_state: load the state before the first step")
        super().set_state(state_dict)
