#!/usr/bin/env bash
# Runs every check the project has: formatting, lints and the whole test suite,
# against real dependencies that this script installs (when missing) and starts
# on free loopback ports. Whatever it starts, it stops. A Redis already running
# on the default port is never touched.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/platform-test.XXXXXX")"
cleanup() {
  stop_mongo_wire "$work"
  stop_redis "$work"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

ensure_cargo
ensure_apt_package redis-server redis-server

step "starting Redis for the tests"
TEST_REDIS_URL="$(start_redis "$work")"
export TEST_REDIS_URL
echo "Redis at $TEST_REDIS_URL"

# The MongoDB path is the production one: the storage conformance suite runs
# against a real wire server, not only the embedded engine.
step "starting the MongoDB wire server for the tests"
TEST_MONGODB_URI="$(start_mongo_wire "$work")"
export TEST_MONGODB_URI
echo "MongoDB wire server at $TEST_MONGODB_URI"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --locked --workspace --no-fail-fast
