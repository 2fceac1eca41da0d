"""Data-parallel training on the CPU: two processes joined by gloo, each with its shard of the batches.

The ranks run the product's model (small networks), TraceEnum_ELBO and pyro_adgm.distributed for real, in
separate processes started here (as torchrun would: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); what they
computed comes back through files and is checked in this process against one process doing the same work.
"""

import copy
import multiprocessing
import os
import signal
import socket
import time
import traceback
from pathlib import Path

import pyro
import pytest
import torch
from conftest import SMALL_MODEL
from pyro.infer import SVI, TraceEnum_ELBO

from pyro_adgm import distributed
from pyro_adgm.checkpoint import load_checkpoint, save_checkpoint
from pyro_adgm.distributed import DataParallelOptim, PeerFailure, World

SIZE, N_L, N_U = 28, 40, 80  # image size, labelled and unlabelled images (even: a rank's plate is N / 2 below)
B_L, B_U = 8, 12  # global batches: each of the two ranks gets half
STEP = {"kl_weight": 0.5, "alpha": 3.0}
SEED = 5


def optim_args(name):
    return {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-2}


def data():
    generator = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(N_L, 1, SIZE, SIZE, generator=generator), torch.rand(N_U, 1, SIZE, SIZE, generator=generator)
    return x_l, torch.arange(N_L) % 2, x_u


def make_model():
    pyro.clear_param_store()
    torch.manual_seed(0)
    from pyro_adgm.model import ADGM

    return ADGM(num_classes=2, image_size=SIZE, **SMALL_MODEL)


def global_batches(epoch, step):
    """The step's global labelled and unlabelled index batches, the same on every rank."""
    order_l = distributed.epoch_permutation(N_L, SEED, epoch)
    order_u = distributed.epoch_permutation(N_U, SEED + 1, epoch)
    return order_l[step * B_L : (step + 1) * B_L], order_u[step * B_U : (step + 1) * B_U]


def shard_batch(world, epoch, step):
    (x_l, y_l, x_u), (idx_l, idx_u) = data(), global_batches(epoch, step)
    idx_l, idx_u = distributed.shard(idx_l, world), distributed.shard(idx_u, world)
    return x_l[idx_l], y_l[idx_l], x_u[idx_u], idx_l, idx_u


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, out_dir: Path, world_size=2, timeout_s=60.0, wait_s=60.0):
    """Start ``world_size`` processes running ``worker(world, out_dir)``; return their exit codes."""
    port = free_port()
    # forked, like DataLoader workers: the children start at once with this process's imports (torch, pyro, the
    # package); each makes its own model, param store and process group
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_rank_main, args=(worker, rank, world_size, port, timeout_s, str(out_dir)))
             for rank in range(world_size)]  # fmt: skip
    for p in procs:
        p.start()
    deadline = time.monotonic() + wait_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def _rank_main(worker, rank, world_size, port, timeout_s, out_dir):
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}  # fmt: skip
    os.environ.update(env)
    torch.set_num_threads(1)
    try:
        world = distributed.init("cpu", timeout_s=timeout_s)
        worker(world, Path(out_dir))
    except BaseException:
        (Path(out_dir) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        distributed.shutdown()


def loss_and_grads(model, x_l, y_l, x_u, labelled_size, unlabelled_size, seed):
    pyro.set_rng_seed(seed)
    return TraceEnum_ELBO(max_plate_nesting=1).loss_and_grads(model.semi_supervised_model, model.semi_supervised_guide, x_l, y_l, x_u,
                                                              labelled_size=labelled_size, unlabelled_size=unlabelled_size, **STEP)  # fmt: skip


# 1. gradients


def gradient_worker(world, out):
    model = make_model()
    if world.rank == 1:  # a different start on rank 1, which broadcast_module must overwrite with rank 0's
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    distributed.broadcast_module(model, world)
    x_l, y_l, x_u, idx_l, idx_u = shard_batch(world, epoch=0, step=0)
    # each rank's loss: the full-data-scale estimate from its own shard (the plates keep the data set's sizes)
    loss = loss_and_grads(model, x_l, y_l, x_u, N_L, N_U, distributed.rank_seed(SEED, world.rank))
    local = {name: p.grad.clone() for name, p in model.named_parameters()}
    optim = DataParallelOptim(pyro.optim.AdamW(optim_args), world)
    optim(list(model.parameters()))  # averages the gradients across the ranks, then steps
    torch.save({"loss": loss, "local": local, "averaged": {name: p.grad.clone() for name, p in model.named_parameters()},
                "stepped": {name: p.detach().clone() for name, p in model.named_parameters()},
                "idx_l": idx_l, "idx_u": idx_u}, out / f"rank{world.rank}.pt")  # fmt: skip


def test_two_ranks_average_to_the_gradient_of_the_union_of_their_batches(tmp_path):
    assert run_ranks(gradient_worker, tmp_path) == [0, 0], [p.read_text() for p in tmp_path.glob("*.error")]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # the shards are disjoint halves of the step's global batches
    idx_l, idx_u = global_batches(0, 0)
    assert sorted(torch.cat([r["idx_l"] for r in ranks]).tolist()) == sorted(idx_l.tolist())
    assert sorted(torch.cat([r["idx_u"] for r in ranks]).tolist()) == sorted(idx_u.tolist())
    assert [len(r["idx_l"]) for r in ranks] == [B_L // 2] * 2 and [len(r["idx_u"]) for r in ranks] == [B_U // 2] * 2

    # one process, one backward, on the union: the estimate N / |union| * (sum over the union), each shard with
    # the noise its rank drew (its seed) and its own batch-norm statistics, as under data parallelism
    model = make_model()
    x_l, y_l, x_u = data()
    total = 0.0
    for rank, r in enumerate(ranks):  # plates of N / 2 for a half of the union: the scale N / |union|
        pyro.set_rng_seed(distributed.rank_seed(SEED, rank))
        total = total + TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
            model.semi_supervised_model, model.semi_supervised_guide, x_l[r["idx_l"]], y_l[r["idx_l"]], x_u[r["idx_u"]],
            labelled_size=N_L // 2, unlabelled_size=N_U // 2, **STEP)  # fmt: skip
    total.backward()
    assert total.item() == pytest.approx((ranks[0]["loss"] + ranks[1]["loss"]) / 2, rel=1e-6)
    reference = dict(model.named_parameters())
    for name, p in reference.items():
        scale = p.grad.abs().max().item()
        assert not torch.allclose(ranks[0]["local"][name], ranks[1]["local"][name])  # the ranks' own gradients differ
        for r in ranks:  # every rank ends up with the union's gradient
            torch.testing.assert_close(r["averaged"][name], p.grad, rtol=1e-5, atol=1e-5 * scale)
    # both ranks took the same step, the one one process takes with that gradient
    optim = pyro.optim.AdamW(optim_args)
    optim([p for p in model.parameters()])
    for name, p in reference.items():
        torch.testing.assert_close(ranks[0]["stepped"][name], ranks[1]["stepped"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["stepped"][name], p.detach(), rtol=1e-5, atol=1e-7)


# 2. checkpoints of a 2-process run in one process


def training_worker(world, out):
    model = make_model()
    optim = DataParallelOptim(pyro.optim.AdamW(optim_args), world)
    svi = SVI(model.semi_supervised_model, model.semi_supervised_guide, optim, TraceEnum_ELBO(max_plate_nesting=1))
    pyro.set_rng_seed(distributed.rank_seed(SEED, world.rank))
    for step in range(2):
        x_l, y_l, x_u, _, _ = shard_batch(world, epoch=0, step=step)
        svi.step(x_l, y_l, x_u, labelled_size=N_L, unlabelled_size=N_U, **STEP)
    before = {name: b.clone() for name, b in model.named_buffers()}
    distributed.average_buffers(model, world)
    torch.save({"before": before, "after": dict(model.named_buffers())}, out / f"buffers{world.rank}.pt")
    if distributed.is_main_process():
        save_checkpoint(out / "last.pt", {"step": 2, "model_state": model.state_dict(), "optimizer_state": optim.get_state()})
    torch.save({name: p.detach().clone() for name, p in model.named_parameters()}, out / f"weights{world.rank}.pt")


def test_a_two_process_checkpoint_loads_evaluates_and_resumes_in_one_process(tmp_path):
    assert run_ranks(training_worker, tmp_path) == [0, 0], [p.read_text() for p in tmp_path.glob("*.error")]
    weights = [torch.load(tmp_path / f"weights{r}.pt") for r in range(2)]
    for name in weights[0]:  # the ranks stayed identical: same averaged gradients, same steps
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0)
    buffers = [torch.load(tmp_path / f"buffers{r}.pt") for r in range(2)]
    for name, value in buffers[0]["after"].items():  # the running statistics: their mean over the ranks, on both
        torch.testing.assert_close(buffers[1]["after"][name], value, rtol=0, atol=0)
        if name.endswith(("running_mean", "running_var")):
            assert not torch.equal(buffers[0]["before"][name], buffers[1]["before"][name])
            torch.testing.assert_close(value, (buffers[0]["before"][name] + buffers[1]["before"][name]) / 2)
        else:  # the batch counters and the fixed p(y) are left as they were
            assert torch.equal(value, buffers[0]["before"][name])
    state = load_checkpoint(tmp_path / "last.pt")
    x_l, y_l, x_u = data()
    finals = {}
    for kind in ("data-parallel", "pyro"):  # the optimiser state is Pyro's format: either optimiser resumes from it
        model = make_model()
        model.load_state_dict(state["model_state"])
        probs = model.classify(x_l[:6])  # evaluates
        assert probs.shape == (6, 2) and torch.allclose(probs.sum(-1), torch.ones(6))
        optim = pyro.optim.AdamW(optim_args)
        optim = DataParallelOptim(optim) if kind == "data-parallel" else optim  # a world of one process
        optim.set_state(copy.deepcopy(state["optimizer_state"]))
        svi = SVI(model.semi_supervised_model, model.semi_supervised_guide, optim, TraceEnum_ELBO(max_plate_nesting=1))
        pyro.set_rng_seed(SEED)
        loss = svi.step(x_l[:B_L], y_l[:B_L], x_u[:B_U], labelled_size=N_L, unlabelled_size=N_U, **STEP)
        assert torch.isfinite(torch.tensor(loss))
        steps = {int(s["state"][0]["step"]) for s in optim.get_state().values()}
        assert steps == {3}  # resumed after the 2 steps of the run, not from scratch
        finals[kind] = (loss, {name: p.detach().clone() for name, p in model.named_parameters()})
    assert finals["data-parallel"][0] == finals["pyro"][0]
    for name, value in finals["pyro"][1].items():
        torch.testing.assert_close(finals["data-parallel"][1][name], value, rtol=1e-6, atol=1e-8)


# 3. a rank that dies


def dying_worker(world, out):
    model = make_model()
    optim = DataParallelOptim(pyro.optim.AdamW(optim_args), world)
    svi = SVI(model.semi_supervised_model, model.semi_supervised_guide, optim, TraceEnum_ELBO(max_plate_nesting=1))
    pyro.set_rng_seed(distributed.rank_seed(SEED, world.rank))
    x_l, y_l, x_u, _, _ = shard_batch(world, epoch=0, step=0)
    svi.step(x_l, y_l, x_u, labelled_size=N_L, unlabelled_size=N_U, **STEP)
    if world.is_main:
        save_checkpoint(out / "last.pt", {"step": 1, "model_state": model.state_dict(), "optimizer_state": optim.get_state()})
    distributed.barrier(world)
    if world.rank == 1:
        os._exit(3)  # dies without a word, in the middle of the run
    start = time.monotonic()
    try:
        svi.step(x_l, y_l, x_u, labelled_size=N_L, unlabelled_size=N_U, **STEP)
    except PeerFailure as error:
        (out / "failure.txt").write_text(f"{time.monotonic() - start:.1f}\n{error}")
        return
    (out / "failure.txt").write_text("no failure")


def test_a_rank_that_dies_ends_the_run_with_one_line_and_the_last_checkpoint_intact(tmp_path):
    codes = run_ranks(dying_worker, tmp_path, timeout_s=15.0, wait_s=45.0)
    assert codes == [0, 3], [p.read_text() for p in tmp_path.glob("*.error")]
    seconds, message = (tmp_path / "failure.txt").read_text().split("\n", 1)
    assert float(seconds) <= 15.0 + 5.0  # noticed at once (a closed connection) or at the timeout at the latest
    assert "\n" not in message
    assert message.startswith("rank 0 of 2: averaging the gradients failed: another process of the run stopped or did not answer within 15 s")
    state = load_checkpoint(tmp_path / "last.pt")  # the last good checkpoint, whole
    assert state["step"] == 1
    model = make_model()
    model.load_state_dict(state["model_state"])


# 4. the trainer's epoch, both methods


def trainer_worker(world, out):
    from pyro_adgm.runs import prepare_trainer
    from pyro_adgm.training import TrainConfig

    assert distributed.from_main({"rank": world.rank}, world) == {"rank": 0}  # rank 0's value on every rank
    for method in ("adgm", "supervised"):
        config = TrainConfig(task="2class", labels_per_class=4, epochs=1, batch_size=8, device="cpu", seed=3, method=method)
        trainer = prepare_trainer(config, demo={"n_images": 90, "image_size": SIZE, "seed": 2}, run_dir=out / method,
                                  model_options=SMALL_MODEL, world=world)  # fmt: skip
        start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        row = trainer.train_epoch()
        distributed.average_buffers(trainer.model, world)
        torch.save({"loss": row["train_loss"], "steps": trainer.steps_per_epoch, "start": start,
                    "state": {name: v.clone() for name, v in trainer.model.state_dict().items()}}, out / f"{method}{world.rank}.pt")  # fmt: skip


def test_the_trainer_s_ranks_take_the_same_steps_under_both_methods(tmp_path):
    assert run_ranks(trainer_worker, tmp_path) == [0, 0], [p.read_text() for p in tmp_path.glob("*.error")]
    for method in ("adgm", "supervised"):
        ranks = [torch.load(tmp_path / f"{method}{r}.pt") for r in range(2)]
        assert ranks[0]["loss"] == ranks[1]["loss"]  # the mean over the ranks, on both
        assert ranks[0]["steps"] == ranks[1]["steps"] > 1
        moved = 0
        for name, value in ranks[0]["state"].items():  # the averaged gradients and buffers keep the ranks identical
            torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0, msg=f"{method}: {name}")
            moved += name in ranks[0]["start"] and not torch.equal(value, ranks[0]["start"][name])
        assert moved > 0, method


# the pieces, in one process


def test_without_torchrun_the_world_is_one_process_and_nothing_communicates():
    world = distributed.init("cpu", env={})
    assert world == World() and world.is_main and not world.distributed
    assert distributed.init("cpu", env={"WORLD_SIZE": "1"}) == World()
    assert distributed.is_main_process() and distributed.current_world() == World()
    indices = torch.arange(10)
    assert distributed.shard(indices, world) is indices
    assert distributed.mean_across_ranks(2.5, world) == 2.5
    with pytest.raises(PeerFailure, match="WORLD_SIZE is 2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.init("cpu", env={"WORLD_SIZE": "2"})


def test_shards_and_permutations():
    perm = distributed.epoch_permutation(50, seed=3, epoch=2)
    assert torch.equal(perm, distributed.epoch_permutation(50, seed=3, epoch=2))
    assert not torch.equal(perm, distributed.epoch_permutation(50, seed=3, epoch=3))
    assert sorted(perm.tolist()) == list(range(50))
    batch = perm[:11]
    parts = [distributed.shard(batch, World(rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3] and torch.equal(torch.cat(parts), batch)
    assert distributed.rank_seed(7, 0) == 7
    assert len({distributed.rank_seed(7, r, e) for r in range(4) for e in range(3)}) == 12
    assert distributed.device_for("cuda", World(rank=3, world_size=4, local_rank=1)) == torch.device("cuda", 1)
    assert distributed.device_for("cpu", World(rank=3, world_size=4, local_rank=1)) == torch.device("cpu")


def test_from_main_and_the_environment_s_rank_in_one_process():
    assert distributed.from_main([1, 2], World()) == [1, 2]
    assert distributed.environment_rank({}) == 0 and distributed.environment_rank({"WORLD_SIZE": "1", "RANK": "0"}) == 0
    assert distributed.environment_rank({"WORLD_SIZE": "4", "RANK": "3"}) == 3


def test_under_torchrun_sigterm_is_a_one_line_peer_failure_and_the_handler_is_put_back():
    previous = signal.getsignal(signal.SIGTERM)
    torchrun = {"WORLD_SIZE": "2", "RANK": "1"}
    try:
        with distributed.sigterm_as_failure(env={}):  # not under torchrun: nothing changes
            assert signal.getsignal(signal.SIGTERM) is previous
        with distributed.sigterm_as_failure(env=torchrun):  # a block that ends well puts the handler back
            assert signal.getsignal(signal.SIGTERM) is not previous
        assert signal.getsignal(signal.SIGTERM) is previous
        with pytest.raises(PeerFailure, match=r"^rank 1 of 2: stopped by SIGTERM \(torchrun stops every process of a run when one of them fails\)$"):
            with distributed.sigterm_as_failure(env=torchrun):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises at the next bytecode
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the process ends with its line, not killed midway
    finally:
        signal.signal(signal.SIGTERM, previous)
