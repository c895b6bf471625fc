#!/usr/bin/env bash
# The packaging linters: hadolint on the Dockerfile, actionlint (with shellcheck on
# the `run:` scripts) on the GitHub workflows. Both come from the suite's venv
# (scripts/python-venv.sh) at the versions pinned in tests/requirements.txt, so
# every machine runs the same checks. Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/python-venv.sh)
bin=$(dirname "$python")

echo "hadolint $("$bin/hadolint" --version | awk '{print $NF}'): Dockerfile"
"$bin/hadolint" --no-color --failure-threshold info Dockerfile

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[ ${#workflows[@]} -gt 0 ] || { echo "lint-packaging: no workflows in .github/workflows" >&2; exit 1; }
echo "actionlint $("$bin/actionlint" -version | head -1 | awk '{print $NF}') + shellcheck: ${workflows[*]}"
# -pyflakes= : no Python in `run:` steps, and none of the machine's tools used by accident.
"$bin/actionlint" -shellcheck "$bin/shellcheck" -pyflakes= "${workflows[@]}"
echo "packaging linters: no findings"
