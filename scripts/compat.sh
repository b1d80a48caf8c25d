#!/usr/bin/env bash
# The oldest and newest versions the package claims, tested: builds one virtual
# environment per corner (under ${COMPAT_DIR:-/tmp/cam-compat}, kept between runs)
# and runs the fast part of the test suite in each.
#
#   oldest: Python 3.9,  torch 2.1.0,  torchvision 0.16.0, TensorBoard 2.15.0, numpy 1.22.4
#   newest: Python 3.13, the newest torch, torchvision and TensorBoard on PyPI (pinned below)
#
# Usage: scripts/compat.sh [oldest|newest ...] [-- pytest args]
# Python 3.9 and 3.13 are taken from pyenv (or PYTHON39 / PYTHON313). The first run
# downloads torch and its CUDA libraries (about 3 GB a corner).
#
# The fast part: tests/writer and tests/backend, less what needs a library that is
# only there to compare against or to stand in for a service (not a dependency of the
# package): test_agreement.py (pytorch-grad-cam, torchcam), test_sanity.py (scipy),
# test_s3.py (moto, boto3), the demo's --dataset digits (scikit-learn) and the
# bench scripts' --help (they import the compared libraries). tests/browser (Chromium,
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

names=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do names+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
[ ${#names[@]} -gt 0 ] || names=(oldest newest)

FAST=(tests/writer tests/backend
      --ignore=tests/writer/test_agreement.py --ignore=tests/writer/test_sanity.py --ignore=tests/backend/test_s3.py
      -k "not test_digits_dataset and not (test_every_command_has_help and bench)")

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
