"""DistributedDataParallel (2 CPU processes, gloo): each rank keeps its own hidden state (DDP
broadcasts buffers from rank 0 at every forward; our state is not a buffer), ranks may have
different batch sizes, and the gradients are the average of the ranks' local gradients; for a
stack of nn.Leaky with init_hidden and for TabularSNN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from snnkernels import nn as knn
from snnkernels.models import TabularSNN

WORLD = 2


def leaky_stack():
    return nn.Sequential(nn.Linear(3, 4), knn.Leaky(beta=0.8, init_hidden=True, output=True))


def tabular():
    return TabularSNN(3, hidden=(8,), num_classes=2, T=4, readout="membrane")


MODELS = {"leaky_stack": leaky_stack, "tabular": tabular}


def run(model, xs):
    """Steps through xs; returns the outputs (for Leaky: the membranes) and the loss."""
    outs = []
    for x in xs:
        out = model(x)
        outs.append(out[1] if isinstance(out, tuple) else out)
    return outs, sum(o.pow(2).sum() for o in outs)


def worker(rank, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        for name in MODELS:  # one spawn for both: starting the processes is the slow part
            check_model(rank, name)
    finally:
        dist.destroy_process_group()


def check_model(rank, name):
    torch.manual_seed(0)
    model = MODELS[name]()
    local = copy.deepcopy(model)
    ddp = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(10 + rank)
    xs = [torch.randn(2 + rank, 3, generator=g) * 2 for _ in range(3)]  # per-rank batch

    outs, loss = run(ddp, xs)
    loss.backward()
    local_outs, local_loss = run(local, xs)
    local_loss.backward()
    for step, (a, b) in enumerate(zip(outs, local_outs)):
        assert torch.equal(a, b), f"rank {rank} step {step}: state or output differs"
    for (n, p), q in zip(model.named_parameters(), local.parameters()):
        expected = q.grad.clone()
        dist.all_reduce(expected)
        torch.testing.assert_close(p.grad, expected / WORLD, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name} rank {rank} grad {n}: {m}")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_ddp_two_cpu_ranks(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD)
