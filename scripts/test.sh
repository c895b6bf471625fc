#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test target:
# unit and table tests, the controller on a mocked Kubernetes API, the simulator
# and client over HTTP, the examples through `local`, and the end-to-end suite on a
# real kube-apiserver + etcd on loopback (built once per machine; see
# tests/e2e/README.md). Any failure fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "end-to-end environment (kube-apiserver + etcd on loopback)"
tests/e2e/testenv.sh up
trap 'tests/e2e/testenv.sh down >/dev/null 2>&1 || true' EXIT

step "cargo test"
# Every test target; the load harness is a bench (run below at one size).
cargo test

step "Helm chart tests"
scripts/chart-tests.sh

step "load: 1000 runs in flight against the simulator, budget 10/s (asserts the budget targets)"
LOAD_RATE=10 cargo bench --profile dev --bench load -- 1000
