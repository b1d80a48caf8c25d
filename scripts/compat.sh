#!/usr/bin/env bash
# The oldest and newest versions the package claims, tested: builds one virtual
# environment per corner (under ${COMPAT_DIR:-/tmp/cam-compat}, kept between runs)
# and runs the fast part of the test suite in each.
#
#   oldest: Python 3.9,  torch 2.1.0,  torchvision 0.16.0, TensorBoard 2.15.0, numpy 1.22.4
#   newest: Python 3.13, the newest torch, torchvision and TensorBoard on PyPI (pinned below)
#
# Usage: scripts/compat.sh [oldest|newest ...] [-- pytest args]
#        scripts/compat.sh servers   (each TensorBoard minor version in between, see SERVERS)
# Python 3.9 and 3.13 are taken from pyenv (or PYTHON39 / PYTHON313). The first run
# downloads torch and its CUDA libraries (about 3 GB a corner).
#
# The fast part: tests/writer and tests/backend, less what needs a library that is
# only there to compare against or to stand in for a service (not a dependency of the
# package): test_agreement.py (pytorch-grad-cam, torchcam), test_sanity.py (scipy),
# test_s3.py (moto, boto3), the demo's --dataset digits (scikit-learn) and
# bench/bench_storage.py's --help (it imports pytorch-grad-cam and scikit-learn). tests/browser (Chromium,
# Playwright) runs only in ./scripts/test.sh. CI runs the newest versions only
# (./scripts/test.sh); this script is run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMPAT_DIR=${COMPAT_DIR:-/tmp/cam-compat}
# The corners are exact pins; a site-wide pip constraints file (one that caps torch,
# say) could only make them unresolvable.
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH

pyenv_python() {  # pyenv_python 3.9 -> the newest installed 3.9.x interpreter
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  find "$root/versions" -maxdepth 1 -name "$1.*" 2>/dev/null | sort -V | tail -n1 | sed 's|$|/bin/python|'
}

# name | interpreter | pins (what a user of that corner installs besides the package)
corner() {
  case $1 in
    oldest) echo "${PYTHON39:-$(pyenv_python 3.9)}|torch==2.1.0 torchvision==0.16.0 tensorboard==2.15.0 numpy==1.22.4 setuptools<82" ;;
    newest) echo "${PYTHON313:-$(pyenv_python 3.13)}|torch==2.15.0 torchvision==0.29.2 tensorboard==2.21.0 numpy==2.5.5" ;;
    *) echo "unknown corner: $1 (oldest, newest)" >&2; return 1 ;;
  esac
}
TEST_TOOLS="pytest hypothesis crc32c"

# The TensorBoard versions between the corners, each with what README's "Versions" says to install with it:
# `scripts/compat.sh servers` installs each (without torch) beside this package's wheel, starts `tensorboard`
# on a log written by a corner's writer (build that corner first) and asks its routes: the tab is listed, its
# files and series are served, and TensorBoard's own HParams and Scalars routes answer 200.
SERVERS=(
  "3.12|tensorboard==2.15.* numpy<2 setuptools<82 protobuf<5"
  "3.12|tensorboard==2.16.* numpy<2 setuptools<82 protobuf<5"
  "3.13|tensorboard==2.17.* setuptools<82 standard-imghdr"
  "3.13|tensorboard==2.18.* setuptools<82 standard-imghdr"
  "3.13|tensorboard==2.19.* setuptools<82 standard-imghdr"
  "3.13|tensorboard==2.20.* setuptools<82"
  "3.13|tensorboard==2.21.*"
)

servers() {
  local writer="" logdir=$COMPAT_DIR/servers/logs dist=$COMPAT_DIR/servers/dist status=0 i spec python pins env_dir
  for name in newest oldest; do [ -x "$COMPAT_DIR/$name/bin/python" ] && writer=$COMPAT_DIR/$name/bin/python && break; done
  [ -n "$writer" ] || { echo "servers: build a corner first (scripts/compat.sh newest)" >&2; return 1; }
  rm -rf "$logdir" "$dist"
  (cd "$COMPAT_DIR" && "$writer" - "$logdir/run" <<'PY'
import sys, warnings
import numpy as np, torch
from writer_ext import SummaryWriter
from writer_ext.demo import ShapeNet, draw_shapes
torch.manual_seed(0)
images, _, _ = draw_shapes(4, np.random.default_rng(0))
with SummaryWriter(sys.argv[1]) as writer, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    writer.add_cam("probe", ShapeNet().eval(), images, global_step=1)
    writer.add_scalar("loss", 1.0, 1)
    writer.add_hparams({"lr": 0.1}, {"hp/loss": 1.0}, run_name=".")
PY
  )
  "$writer" -m pip wheel -q --no-deps --no-build-isolation -w "$dist" "$ROOT" && rm -rf "$ROOT/build"
  for i in "${!SERVERS[@]}"; do
    spec=${SERVERS[$i]}
    python=$(pyenv_python "${spec%%|*}")
    read -r -a pins <<<"${spec#*|}"
    env_dir=$COMPAT_DIR/servers/env$i
    if [ "$(cat "$env_dir/.pins" 2>/dev/null)" != "$python ${pins[*]}" ]; then
      rm -rf "$env_dir"
      "$python" -m venv "$env_dir"
      "$env_dir/bin/python" -m pip install -q --upgrade pip
      "$env_dir/bin/python" -m pip install -q "${pins[@]}"
      echo "$python ${pins[*]}" >"$env_dir/.pins"
    fi
    "$env_dir/bin/python" -m pip install -q --no-deps --force-reinstall "$dist"/*.whl
    "$env_dir/bin/python" - "$logdir" "${pins[*]}" <<'PY' || status=1
import json, socket, subprocess, sys, time, urllib.request
import importlib.metadata as md
logdir, pins = sys.argv[1:]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
versions = "Python %d.%d, TensorBoard %s, numpy %s, protobuf %s, setuptools %s" % (
    *sys.version_info[:2], *(md.version(p) for p in ("tensorboard", "numpy", "protobuf", "setuptools")))
tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
                       "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
base = f"http://127.0.0.1:{port}/data"

def get(path, data=None):
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""

try:
    for _ in range(120):
        if tb.poll() is not None:
            sys.exit(f"{versions} ({pins}): tensorboard exited: {tb.stderr.read().strip().splitlines()[-1]}")
        try:
            listing = json.loads(get("/plugins_listing")[1])
            break
        except OSError:
            time.sleep(0.5)
    for _ in range(60):  # until the log is loaded
        status, body = get("/plugin/cam/series")
        if status == 200 and json.loads(body)["series"]:
            break
        time.sleep(0.5)
    answers = {
        "tab listed": listing.get("cam", {}).get("enabled"),
        "static": get("/plugin/cam/static/index.js")[0],
        "series": [s["tag"] for s in json.loads(get("/plugin/cam/series")[1])["series"]],
        "hparams": get("/plugin/hparams/experiment", b'{"experimentName": ""}')[0],
        "scalars": get("/plugin/scalars/tags")[0],
    }
    good = answers == {"tab listed": True, "static": 200, "series": ["probe"], "hparams": 200, "scalars": 200}
    print(f"{versions} ({pins}): {answers}: {'passed' if good else 'FAILED'}")
    sys.exit(0 if good else 1)
finally:
    tb.terminate()
    tb.wait()
PY
  done
  return $status
}

if [ "${1:-}" = servers ]; then
  servers
  exit
fi

names=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do names+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
[ ${#names[@]} -gt 0 ] || names=(oldest newest)

FAST=(tests/writer tests/backend
      --ignore=tests/writer/test_agreement.py --ignore=tests/writer/test_sanity.py --ignore=tests/backend/test_s3.py
      -k "not test_digits_dataset and not bench_storage")

status=0
summary=()
for name in "${names[@]}"; do
  spec=$(corner "$name")
  python=${spec%%|*}
  read -r -a pins <<<"${spec#*|}"
  [ -x "$python" ] || { echo "$name: no interpreter at '$python'" >&2; exit 1; }
  env_dir=$COMPAT_DIR/$name
  stamp="$python ${pins[*]} $TEST_TOOLS"
  if [ "$(cat "$env_dir/.pins" 2>/dev/null)" != "$stamp" ]; then
    echo "== $name: building $env_dir ($stamp)"
    rm -rf "$env_dir"
    "$python" -m venv "$env_dir"
    # the build tools first (within the corner's pins: setuptools<82 for the oldest), to build this package with
    "$env_dir/bin/python" -m pip install -q --upgrade pip setuptools wheel -c <(printf '%s\n' "${pins[@]}")
    # one resolution: the package's own requirements must admit the corner's pins
    "$env_dir/bin/python" -m pip install -q --no-build-isolation "${pins[@]}" $TEST_TOOLS "$ROOT"
    echo "$stamp" >"$env_dir/.pins"
  fi
  # this checkout's code, as a wheel would install it (not editable)
  "$env_dir/bin/python" -m pip install -q --no-deps --force-reinstall --no-build-isolation "$ROOT"
  rm -rf "$ROOT/build"
  versions=$("$env_dir/bin/python" -c 'import sys, torch, torchvision, tensorboard, numpy, google.protobuf as pb
print("Python %d.%d.%d" % sys.version_info[:3], "torch", torch.__version__, "torchvision", torchvision.__version__,
      "TensorBoard", tensorboard.__version__, "numpy", numpy.__version__, "protobuf", pb.__version__)')
  echo "== $name: $versions"
  # from the checkout's root, but importing the installed package (the pytest script, not python -m pytest)
  if "$env_dir/bin/pytest" -q -p no:cacheprovider "${FAST[@]}" "$@"; then
    summary+=("$name: $versions: passed")
  else
    summary+=("$name: $versions: FAILED")
    status=1
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
