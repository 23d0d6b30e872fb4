#!/bin/bash
# Installs what is missing and runs every check and test: rustfmt, clippy (warnings
# are errors), unit, root integration and end-to-end tests. Runs as root: the tests
# use namespaces, mounts and cgroups for real and fail (not skip) without root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "test.sh: run as root" >&2; exit 1; }
./hack/install-deps.sh

step() { echo "==> $*"; }

step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "build (the e2e tests run the real coracled binary)"
cargo build --locked --workspace --bins
step "test images"
rm -rf target/test-images
python3 hack/test-images/build.py target/test-images >/dev/null
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-fail-fast
else
    cargo test --locked --workspace --no-fail-fast
fi
