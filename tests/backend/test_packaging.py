"""Packaging: `python -m build` makes an sdist and a wheel (built from the sdist); the wheel, installed into a
fresh virtual environment, registers the plugin so that a plain `tensorboard --logdir DIR` lists the tab and
serves its frontend, and the sdist installs and works there too (its commands, a sample written)."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import TensorBoardProcess

ROOT = Path(__file__).resolve().parents[2]


def test_entry_point_module_imports_no_torch():
    code = (
        "import sys, importlib.metadata as md;"
        # Python 3.9's entry_points() is a dict by group, without select(), and lists a distribution twice
        # when its metadata is also found in the current directory (the checkout's egg-info)
        "eps = md.entry_points();"
        "eps = eps.select(group='tensorboard_plugins') if hasattr(eps, 'select') else eps['tensorboard_plugins'];"
        "[ep] = {e.value: e for e in eps if e.name == 'cam'}.values();"
        "loader = ep.load();"
        "print(ep.value, 'torch' in sys.modules, 'PIL' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["tensorboard_plugin_cam.plugin:CamLoader", "False", "False"]


def test_the_writer_imports_no_server_code():
    """A training process imports writer_ext: no werkzeug, no plugin or reader, no TensorBoard backend."""
    code = (
        "import sys, writer_ext;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'werkzeug' or m.startswith("
        "('tensorboard.backend', 'tensorboard.plugins.base_plugin', 'tensorboard_plugin_cam.plugin',"
        " 'tensorboard_plugin_cam.reader'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    return out


def _fresh_env(env_dir: Path, artifact: Path) -> Path:
    """A new virtual environment holding `artifact` (a wheel or an sdist); returns its python.

    It borrows the already-installed dependencies (TensorBoard, torch) but gets the plugin only from
    `artifact`. They are borrowed from this interpreter's site directories, whether it is a virtual environment
    or not: `system_site_packages` would give the base interpreter's instead, without what a virtual
    environment installed.
    """
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    borrowed = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    # after the environment's own directory, each with its .pth files, as a system site directory would be
    (Path(own) / "_borrowed.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in borrowed))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--no-build-isolation", "--ignore-installed", str(artifact)], check=True, capture_output=True)
    return python


def test_wheel_in_fresh_venv_lists_the_tab(tmp_path, dist):
    [wheel] = dist.glob("tensorboard_plugin_cam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped_modules = {n for n in archive.namelist() if n.endswith(".py")}
    source = {p.relative_to(ROOT).as_posix() for top in ("writer_ext", "tensorboard_plugin_cam")
              for p in (ROOT / top).rglob("*.py")}
    assert source <= shipped_modules, sorted(source - shipped_modules)  # every module of the source is shipped
    env_dir = tmp_path / "venv"
    python = _fresh_env(env_dir, wheel)
    where = subprocess.run(
        [str(python), "-c", "import tensorboard_plugin_cam.plugin as p; print(p.__file__); "
                            "print(sorted(p._load_static_files()))"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.splitlines()
    assert where[0].startswith(str(env_dir)), where
    frontend = ROOT / "frontend"  # every file of the checkout's frontend is in the wheel
    shipped = sorted(p.relative_to(frontend).as_posix() for p in frontend.rglob("*") if p.suffix in (".js", ".css"))
    assert "cam/index.js" in shipped and where[1] == str(shipped)

    logdir = tmp_path / "logs"
    logdir.mkdir()
    tb = TensorBoardProcess(logdir, load_fast="auto", python=str(python))
    try:
        listing = json.loads(tb.get("/data/plugins_listing"))
        assert listing["cam"]["tab_name"] == "Activations & CAM"
        assert listing["cam"]["loading_mechanism"]["module_path"] == "/data/plugin/cam/static/index.js"
        shipped = (ROOT / "frontend" / "index.js").read_bytes()
        assert tb.get("/data/plugin/cam/static/index.js") == shipped
    finally:
        tb.close()


SMOKE = """
import sys, tempfile
from pathlib import Path
import torch
import writer_ext
from tensorboard.backend.event_processing import event_file_loader
assert Path(writer_ext.__file__).is_relative_to(sys.prefix), writer_ext.__file__
model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
with tempfile.TemporaryDirectory() as logdir:
    with writer_ext.SummaryWriter(logdir) as writer:
        writer.add_cam("smoke", model, torch.rand(1, 3, 8, 8), target_layer="0", global_step=0)
    [path] = Path(logdir).glob("events.out.tfevents.*")
    tags = {v.tag for e in event_file_loader.EventFileLoader(str(path)).Load() for v in e.summary.value}
    assert "smoke" in tags, tags
print("smoke ok")
"""


def test_sdist_in_fresh_venv_writes_a_sample_and_has_its_commands(tmp_path, dist):
    [sdist] = dist.glob("tensorboard_plugin_cam-*.tar.gz")
    python = _fresh_env(tmp_path / "venv", sdist)
    smoke = subprocess.run([str(python), "-c", SMOKE], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert smoke.returncode == 0 and "smoke ok" in smoke.stdout, smoke.stderr[-3000:]
    for command in ("tensorboard-cam", "tensorboard-cam-demo"):
        shown = subprocess.run([str(python.parent / command), "--help"], capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0 and "usage" in shown.stdout, shown.stderr[-2000:]
