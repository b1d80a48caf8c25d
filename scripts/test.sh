#!/usr/bin/env bash
# Installs what the tests need (Chromium from Debian's packages when missing
# and running as root) and runs the whole suite. Usage: ./scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Debian's chromium is needed at /usr/bin/chromium (apt-get install -y chromium, as root)" >&2
    exit 1
  fi
fi

python3 -m pip install -q -e ".[test]"
python3 -m ruff check .
python3 -m pytest -q -p no:cacheprovider tests "$@"
