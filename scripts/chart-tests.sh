#!/usr/bin/env bash
# The Helm chart tests: rendered and linted with Helm's own engine (helm-python-sdk).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check helm-python-sdk pytest pyyaml 2>&1 | grep -v "WARNING: Running pip as the 'root'" || true
cd tests/chart
python3 -m pytest -q -p no:cacheprovider .
