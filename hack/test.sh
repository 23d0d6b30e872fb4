#!/bin/bash
# Installs what is missing and runs every check and test: rustfmt, clippy (warnings
# are errors), unit, root integration and end-to-end tests. Runs as root: the tests
# use namespaces, mounts and cgroups for real and fail (not skip) without root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "test.sh: run as root" >&2; exit 1; }
./hack/install-deps.sh

step() { echo "==> $*"; }

# Containers of pods without a cgroup parent live under /coracle in each cgroup
# hierarchy, and the runtime keeps that parent. Remove it afterwards when this run
# made it: a leftover inside it is a leaked cgroup, reported.
existing_parents=$(ls -d /sys/fs/cgroup/*/coracle 2>/dev/null || true)
remove_test_cgroup_parents() {
    for dir in /sys/fs/cgroup/*/coracle; do
        [ -d "$dir" ] || continue
        grep -qxF "$dir" <<<"$existing_parents" && continue
        rmdir "$dir" 2>/dev/null || echo "test.sh: $dir is not empty: a test left a cgroup behind" >&2
    done
}
trap remove_test_cgroup_parents EXIT

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
