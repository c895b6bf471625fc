#!/usr/bin/env bash
# The Helm chart tests: rendered and linted with Helm's own engine (helm-python-sdk),
# with the suite's own Python (scripts/python-venv.sh). They compare the chart's CRDs
# with what the binary prints (so it is built first), and check the alerting rules
# with promtool (Debian's prometheus package: tests/e2e/testenv.sh install).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/python-venv.sh)
cargo build --quiet --bin amperity-operator
cd tests/chart
"$python" -m pytest -q -p no:cacheprovider .
