"""Under torch.distributed (DDP, gloo, two CPU processes): rank 0 logs by default, every rank
with all_ranks=True, layer names resolve on the wrapped model, and training stays in sync."""

from __future__ import annotations

import numpy as np
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
        with CamMonitor(logdir, model, probes, every_n_steps=1, target_layer="module.features",
                        all_ranks=all_ranks) as mon:
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


def _summary(result) -> dict:
    """What must not depend on how the data was split: a comparable dict of an EvalResult."""
    return {"count": result.count, "means": result.means, "intervals": result.intervals,
            "histograms": result.histograms, "classes": result.class_counts, "per_class": result.per_class,
            "worst": {k: [e["index"] for e in v] for k, v in result.worst.items()},
            "best": {k: [e["index"] for e in v] for k, v in result.best.items()}}


def _evaluation(writer=None, items: int = 37):
    from torch.utils.data import TensorDataset

    from writer_ext import add_evaluation, evaluate
    from writer_ext.demo import draw_shapes

    images, labels, boxes = draw_shapes(items, np.random.default_rng(3))
    torch.manual_seed(0)
    result = evaluate(SmallNet(), TensorDataset(images, labels, boxes), methods=("gradcam", "layercam"),
                      target_layer="features", metrics=("average_drop", "increase_in_confidence", "deletion_auc",
                                                        "pointing_game", "energy_pointing_game"),
                      steps=3, batch_size=8, worst=3, progress=False)
    if writer is not None:
        add_evaluation(writer, "eval", result, global_step=2)
    return result


def _eval_worker(rank: int, port: int, logdir: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        from writer_ext import SummaryWriter

        writer = SummaryWriter(logdir) if rank == 0 else None  # the others need none: rank 0 writes
        summaries = [_summary(_evaluation(writer)), _summary(_evaluation(items=1))]  # one image: rank 1 has none
        if writer is not None:
            writer.close()
        torch.save(summaries, f"{out}/eval{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(tmp_path):
    logdir, out = tmp_path / "logs", tmp_path / "out"
    out.mkdir()
    mp.spawn(_eval_worker, args=(free_port(), str(logdir), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"eval{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank returns the same result
    for split, whole in zip(ranks[0], (_summary(_evaluation()), _summary(_evaluation(items=1)))):
        assert split["means"].keys() == whole["means"].keys()
        for key, per_metric in whole["means"].items():
            assert split["means"][key] == pytest.approx(per_metric, abs=1e-9)
            for metric, interval in whole["intervals"][key].items():
                assert split["intervals"][key][metric] == pytest.approx(interval, abs=1e-9)
        for c, per_key in whole["per_class"].items():
            for key, per_metric in per_key.items():
                assert split["per_class"][c][key] == pytest.approx(per_metric, abs=1e-9)
        floats = ("means", "intervals", "per_class")
        assert {k: v for k, v in split.items() if k not in floats} == \
            {k: v for k, v in whole.items() if k not in floats}
    assert [p.parent for p in logdir.rglob("events.out.tfevents.*")] == [logdir]
