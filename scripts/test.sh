#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test target:
# unit and table tests, the controller on a mocked Kubernetes API, the simulator
# and client over HTTP, the examples through `local`, and the end-to-end suite on a
# real kube-apiserver (built once per machine; see tests/e2e/README.md), the Helm
# chart tests, the linters of the Dockerfile and the workflows, and a load run.
# Any failure fails the run; nothing is skipped.
#
# Everything it needs it installs itself, before the first step that uses it: the
# Rust components, the apt packages of the end-to-end environment (as root), the
# kube-apiserver, kubectl and kube-controller-manager it builds, and the Python tools
# in target/venv.
#
#   scripts/test.sh           reuse what earlier runs installed
#   scripts/test.sh --fresh   start from nothing it did not install itself: a new
#                             venv and a new end-to-end environment (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
fresh=
case "${1:-}" in
  --fresh) fresh=--fresh ;;
  "") ;;
  *) echo "usage: $0 [--fresh]" >&2; exit 2 ;;
esac

timings=()
step_name=
step_started=$SECONDS
step() {
  end_step
  step_name=$*
  step_started=$SECONDS
  printf '\n==> %s\n' "$*"
}
end_step() {
  [ -n "$step_name" ] && timings+=("$(printf '%5ds  %s' $((SECONDS - step_started)) "$step_name")")
  step_name=
}
summary() {
  local rc=$?
  end_step
  printf '\n==> step times\n'
  printf '%s\n' "${timings[@]}"
  printf '%5ds  total (%s)\n' "$SECONDS" "$([ $rc = 0 ] && echo passed || echo FAILED)"
  tests/e2e/testenv.sh down >/dev/null 2>&1 || true
}
trap summary EXIT

step "Rust components (rustfmt, clippy)"
rustup component add rustfmt clippy

step "Python tools in target/venv (tests/requirements.txt)"
scripts/python-venv.sh $fresh

step "end-to-end environment: apt packages (promtool too), kube-apiserver, kubectl and kube-controller-manager (built once per machine), etcd + kube-apiserver + clusterrole aggregation on loopback"
[ -n "$fresh" ] && tests/e2e/testenv.sh down
tests/e2e/testenv.sh up

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test -- --include-ignored"
# Every test target, the ignored ones too: the end-to-end suite on the environment
# brought up above and the Argo CD checks under Lua (plain `cargo test` runs neither).
# The load harness is a bench (run below at one size).
cargo test -- --include-ignored

step "Helm chart tests"
scripts/chart-tests.sh

step "packaging linters (hadolint, actionlint)"
scripts/lint-packaging.sh

step "load: 1000 runs in flight against the simulator (429 above the budget, 5/s), change feed on: runs ending at 2.5/s for 90 s (end -> status p99 within pollInterval + 2 s, the budget targets), then 200 ending within one second with stops asked meanwhile (p99 within pollInterval + 5 s, each stop within 2 s of its decision)"
LOAD_FEED=on LOAD_CASE=steady,burst LOAD_BURST=200 LOAD_MAX_WINDOW=90 cargo bench --profile dev --bench load -- 1000
end_step
