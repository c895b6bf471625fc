#!/usr/bin/env bash
# The suite's Python tools (the Helm chart renderer and its tests) in a virtual
# environment under target/, with exactly the versions in tests/requirements.txt:
# a package installed on the machine can neither stand in for a missing install
# step nor bring another version. Prints the path of the venv's python.
#
#   scripts/python-venv.sh           create it, or bring it up to date (quick when current)
#   scripts/python-venv.sh --fresh   throw it away and create it again
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/target/venv
requirements=tests/requirements.txt
[ "${1:-}" = "--fresh" ] && rm -rf "$venv"
# The copy of the requirements it was built from: a changed pin rebuilds it.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
  rm -rf "$venv"
  command -v python3 >/dev/null || { echo "python-venv: python3 is needed (3.9 or later)" >&2; exit 1; }
  python3 -m venv "$venv" >&2 || { echo "python-venv: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --only-binary=:all: -r "$requirements" >&2 \
    || { rm -rf "$venv"; echo "python-venv: installing $requirements failed" >&2; exit 1; }
  cp "$requirements" "$venv/requirements.txt"
fi
echo "$venv/bin/python"
