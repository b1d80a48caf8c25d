"""Hostile data for `evaluate`: labels that are no class of the model, images of different sizes, items that
are not (tensor, int). Refused naming `data` and the item's index, before any tally is sized by a label."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from helpers import SmallNet
from writer_ext import SummaryWriter, evaluate
from writer_ext.evaluation.tally import Tally


class Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _run(data, **kwargs):
    torch.manual_seed(0)
    return evaluate(SmallNet(classes=4), data, metrics=["average_drop"], progress=False, **kwargs)


def _images(n, size=12):
    return torch.rand(n, 3, size, size)


@pytest.mark.parametrize("label", [-1, 4, 4_000_000])
def test_a_label_that_is_no_class_is_refused_with_its_index(label):
    labels = torch.tensor([0, 1, label, 2, 3])
    with pytest.raises(ValueError, match=rf"data: item 2 has label {label}, but the model has 4 classes"):
        _run(TensorDataset(_images(5), labels), batch_size=2)


def test_a_bad_label_in_a_later_batch_of_an_iterable_is_refused_with_its_index():
    batches = [(_images(2), torch.tensor([0, 1])), (_images(2), torch.tensor([3, -1]))]
    with pytest.raises(ValueError, match="data: item 3 has label -1"):
        _run(batches)


def test_a_bad_label_writes_nothing(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="data: item 0"):
            _run(TensorDataset(_images(2), torch.tensor([9, 0])), writer=writer, tag="e")
    from tensorboard.backend.event_processing import event_file_loader

    events = [e for p in tmp_path.rglob("events.out.tfevents.*")
              for e in event_file_loader.EventFileLoader(str(p)).Load() if e.summary.value]
    assert events == []


def test_a_huge_label_is_refused_quickly_without_a_big_allocation(tmp_path):
    """3 images labelled 4,000,000 took +489 MB for the per-class tallies; now a refusal, and the peak
    resident memory of a fresh process grows by less than 40 MB over the call."""
    script = textwrap.dedent(f"""
        import resource, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        import torch
        from torch.utils.data import TensorDataset
        from helpers import SmallNet
        from writer_ext import evaluate
        model = SmallNet(classes=4)
        data = TensorDataset(torch.rand(3, 3, 12, 12), torch.tensor([4_000_000] * 3))
        evaluate(model, TensorDataset(torch.rand(3, 3, 12, 12), torch.tensor([0, 1, 2])), progress=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            evaluate(model, data, progress=False)
            print("accepted")
        except ValueError as e:
            print("refused", e)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(f"MB {{grown / 1024:.1f}} s {{time.perf_counter() - start:.2f}}")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path).stdout.split("\n")
    assert out[0].startswith("refused data: item 0 has label 4000000"), out
    grown, seconds = float(out[1].split()[1]), float(out[1].split()[3])
    assert grown < 40, out
    assert seconds < 5, out


def test_tallies_are_sized_by_the_models_classes():
    tally = Tally(rows=2, metrics=1, ranked=[0], keep=1, lower_is_better=True, classes=10)
    assert tuple(tally.class_sums.shape) == (10, 2, 1)
    tally.add(torch.rand(2, 2, 1), torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="labels must be classes 0 to 9"):
        tally.add(torch.rand(1, 2, 1), torch.tensor([10]))
    assert tally.count == 2


def test_the_result_lists_only_the_classes_seen():
    result = _run(TensorDataset(_images(4), torch.tensor([0, 2, 2, 0])))
    assert sorted(result.class_counts) == [0, 2]
    assert result.class_counts == {0: 2, 2: 2}


@pytest.mark.parametrize("workers", [0, 1])
def test_images_of_different_sizes_in_one_batch_are_refused_with_the_index(workers):
    items = [(torch.rand(3, 12, 12), 0), (torch.rand(3, 12, 12), 1), (torch.rand(3, 12, 12), 2),
             (torch.rand(3, 16, 12), 3)]
    with pytest.raises(ValueError, match=r"data: item 3 has an image of shape \(3, 16, 12\) where the batch's "
                                         r"first has \(3, 12, 12\)"):
        _run(Items(items), batch_size=4, num_workers=workers)
    # one image per batch: each size is its own batch
    assert _run(Items(items), batch_size=1).count == 4


def test_items_that_are_not_a_tensor_and_an_int_are_refused_with_the_index():
    good = (torch.rand(3, 12, 12), 0)
    cases = [
        ((Image.new("RGB", (12, 12)), 1), "data: item 1 has an image of type Image"),
        ((torch.rand(3, 12, 12), 1.5), "data: item 1 has a label 1.5"),
        ((torch.rand(3, 12, 12), "cat"), "data: item 1 has a label 'cat'"),
        ((torch.rand(3, 12, 12),), "data: item 1 is not"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            _run(Items([good, bad, good]), batch_size=3)


@pytest.mark.parametrize("content", [b"garbage", b"", "dict"])
def test_a_checkpoint_file_that_is_not_ours_is_refused_naming_checkpoint(tmp_path, content):
    path = tmp_path / "ckpt"
    file = tmp_path / "ckpt.rank0-of-1.pt"
    if content == "dict":
        torch.save({"other": torch.zeros(1)}, file)
    else:
        file.write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint: .*ckpt\.rank0-of-1\.pt cannot be read as an evaluation "
                                         r"checkpoint .*; remove it or pass another path"):
        _run(TensorDataset(_images(2), torch.tensor([0, 1])), checkpoint=path)


def test_evaluate_over_a_data_set_leaves_the_callers_random_stream_untouched():
    model, data = SmallNet(classes=4), TensorDataset(_images(4), torch.tensor([0, 1, 2, 3]))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    evaluate(model, data, batch_size=2, metrics=["average_drop"], progress=False)
    assert torch.equal(torch.rand(3), expected)  # the loader's worker seed came from a generator of its own


def test_images_too_small_for_the_insertion_blur_are_refused_naming_metrics(tmp_path):
    """Insertion starts from an 11x11 Gaussian blur, whose reflected padding needs 6x6 pixels: a 5x5 batch
    was a raw torch RuntimeError ("Padding size should be less than ..."); now a ValueError naming `metrics`
    from evaluate and add_cam, nothing written, and the other metrics still score such images."""
    data = TensorDataset(_images(2, size=5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="metrics: insertion AUC .* at least 6x6 pixels, got 5x5"):
        evaluate(SmallNet(classes=4), data, progress=False)
    scored = evaluate(SmallNet(classes=4), data, metrics=["average_drop", "deletion_auc"], progress=False)
    assert scored.count == 2 and scored.means["gradcam"]["deletion_auc"] >= 0  # the rest is scored
    evaluate(SmallNet(classes=4), TensorDataset(_images(2, size=6), torch.tensor([0, 1])), progress=False)
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="metrics: insertion AUC"):
            writer.add_cam("c", SmallNet(classes=4).eval(), _images(2, size=5), metrics=True)
    from tensorboard.backend.event_processing import event_file_loader

    assert not [e for p in tmp_path.rglob("events.out.tfevents.*")
                for e in event_file_loader.EventFileLoader(str(p)).Load() if e.summary.value]
