"""Under torch.distributed (DDP, gloo, two CPU processes): rank 0 logs by default, every rank
with all_ranks=True, layer names resolve on the wrapped model, and training stays in sync."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import SmallNet, cam_sample_steps, free_port
from writer_ext import CamMonitor


def _worker(rank: int, port: int, logdir: str, all_ranks: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(SmallNet())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        probes = torch.rand(2, 3, 12, 12)
        torch.manual_seed(1 + rank)  # each rank sees its own data
        with CamMonitor(logdir, model, probes, every=1, target_layer="module.features", all_ranks=all_ranks) as mon:
            for step in range(3):
                loss = model(torch.rand(4, 3, 12, 12)).logsumexp(1).mean()
                optimizer.zero_grad()
                loss.backward()
                mon.step(step)
                optimizer.step()
        # parameters only: BatchNorm statistics are per rank until DDP broadcasts them at the next forward
        torch.save({k: v.detach().clone() for k, v in model.module.named_parameters()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("all_ranks", [False, True])
def test_ddp_two_processes(tmp_path, all_ranks):
    logdir, out = tmp_path / "logs", tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(free_port(), str(logdir), all_ranks, str(out)), nprocs=2, join=True)
    files = sorted(p.relative_to(logdir).parent.as_posix() for p in logdir.rglob("events.out.tfevents.*"))
    assert files == (["rank0", "rank1"] if all_ranks else ["."])
    for path in logdir.rglob("events.out.tfevents.*"):
        assert cam_sample_steps(path) == [0, 1, 2]
    states = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # gradients were still all-reduced
