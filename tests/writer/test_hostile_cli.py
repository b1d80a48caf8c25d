"""`tensorboard-cam eval` on hostile files: images that cannot be decoded (skipped and counted, or refused
with --strict), --weights that is not a checkpoint or does not fit, a torchvision checkpoint's class count.
What the user can fix is one line naming the file, exit status 2, no traceback. And the default-layer
warning points at the user's line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from writer_ext import compute_cams, evaluate
from writer_ext.cli import main
from writer_ext.demo import CLASSES, ShapeNet, draw_shapes

ROOT = Path(__file__).resolve().parents[2]
IMAGE = draw_shapes(1, np.random.default_rng(9))[0][0]


def _bad(folder: Path, name: str, content: bytes) -> None:
    target = folder / "data" / CLASSES[0]
    target.mkdir(parents=True, exist_ok=True)
    (target / name).write_bytes(content)


def _png(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    """6 drawn shapes as PNGs, one folder per class, and an untrained ShapeNet's weights."""
    images, labels, _ = draw_shapes(6, np.random.default_rng(3))
    for i, (image, label) in enumerate(zip(images, labels)):
        target = tmp_path / "data" / CLASSES[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{i}.png").write_bytes(_png(image))
    torch.manual_seed(0)
    torch.save(ShapeNet().state_dict(), tmp_path / "weights.pt")
    return tmp_path


def _args(folder: Path, *extra: str, model: str = "writer_ext.demo:ShapeNet", weights: str = "weights.pt"):
    return ["eval", "--model", model, "--weights", str(folder / weights), "--data", str(folder / "data"),
            "--logdir", str(folder / "logs"), "--image-size", "32", "--normalize", "none", "--batch-size", "4",
            "--steps", "2", "--metrics", "average_drop", "--quiet", "--target-layer", "features", *extra]


def _refused(capsys, argv, *needles):
    """main(argv) exits with status 2 and one line on stderr holding every needle."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("damage", ["text", "truncated_png", "empty"])
def test_an_undecodable_image_is_skipped_with_a_warning_and_counted(folder, capsys, damage):
    _bad(folder, "bad.png", {"text": b"not an image at all", "truncated_png": _png(IMAGE)[:200],
                   "empty": b""}[damage])
    with pytest.warns(RuntimeWarning, match=r"skipping 1 file\(s\) that cannot be decoded, first .*bad\.png"):
        main(_args(folder))
    out = capsys.readouterr().out
    assert "6 images (1 file(s) skipped: cannot be decoded)" in out


def test_an_undecodable_image_is_refused_with_strict(folder, capsys):
    _bad(folder, "bad.png", b"GIF89a garbage")
    _refused(capsys, _args(folder, "--strict"), "--data:", "bad.png cannot be decoded", "without --strict")
    assert not (folder / "logs").exists()  # nothing written


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_truncated_past_its_header_is_one_line(folder, capsys, workers):
    """A JPEG cut short passes PIL's verify and fails when decoded: the loader names the file."""
    jpeg = _jpeg(IMAGE)
    _bad(folder, "cut.jpg", jpeg[:len(jpeg) * 7 // 10])
    _refused(capsys, _args(folder, "--workers", workers), "--data:", "cut.jpg cannot be decoded", "remove or replace")


@pytest.mark.parametrize("content,needles", [
    (b"hello, I am text", ("is not a checkpoint torch.load can read", "torch.save(model.state_dict()")),
    (None, ("no such file",)),
    ("list", ("holds a list, not a state dict",)),
])
def test_weights_that_are_not_a_checkpoint(folder, capsys, content, needles):
    path = folder / "w.bin"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([1, 2, 3], path)
    _refused(capsys, _args(folder, weights="w.bin"), "--weights", "w.bin", *needles)


def test_weights_of_another_class_count(folder, capsys):
    torch.save(ShapeNet(classes=7).state_dict(), folder / "seven.pt")
    _refused(capsys, _args(folder, weights="seven.pt"), "--weights", "seven.pt", "does not fit --model",
             "size mismatch", "--num-classes")


def test_a_torchvision_model_takes_the_class_count_of_its_checkpoint(folder, capsys):
    pytest.importorskip("torchvision")
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=len(CLASSES)).state_dict(), folder / "r18.pt")
    argv = _args(folder, model="torchvision:resnet18", weights="r18.pt")
    argv[argv.index("--target-layer") + 1] = "layer4"
    main(argv)
    captured = capsys.readouterr()
    assert f"--num-classes {len(CLASSES)}, read from --weights (fc.weight has {len(CLASSES)} rows)" in captured.err
    assert "6 images" in captured.out
    # told the wrong count, it is refused in one line
    _refused(capsys, [*argv, "--num-classes", "10"], "does not fit --model torchvision:resnet18", "--num-classes")


def test_the_exit_status_and_message_of_a_real_process(folder):
    (folder / "w.bin").write_bytes(b"\x00" * 64)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "writer_ext.cli", *_args(folder, weights="w.bin")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("tensorboard-cam eval: --weights ")


def test_the_default_layer_warning_points_at_the_callers_line():
    for call in (lambda m, x: compute_cams(m, x),
                 lambda m, x: evaluate(m, [(x, torch.tensor([0, 1]))], metrics=["average_drop"], progress=False)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call(ShapeNet(), torch.rand(2, 3, 16, 16))
        [found] = [w for w in seen if "target_layer=None: using layer" in str(w.message)]
        assert found.filename == __file__, found.filename


@pytest.mark.parametrize("change,needles", [
    (("--data", "missing"), ("missing",)),
    (("--batch-size", "0"), ("batch_size must be a positive int",)),
    (("--steps", "-3"), ("steps must be a positive int",)),
    (("--target-layer", "nope"), ("target_layer",)),
])
def test_other_mistakes_are_one_line_with_status_2(folder, capsys, change, needles):
    argv = _args(folder)
    flag, value = change
    argv[argv.index(flag) + 1] = str(folder / value) if flag == "--data" else value
    _refused(capsys, argv, *needles)
