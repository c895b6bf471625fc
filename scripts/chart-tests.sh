#!/usr/bin/env bash
# The Helm chart tests: rendered and linted with Helm's own engine (helm-python-sdk),
# with the suite's own Python (scripts/python-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/python-venv.sh)
cd tests/chart
"$python" -m pytest -q -p no:cacheprovider .
