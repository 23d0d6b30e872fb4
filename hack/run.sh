#!/bin/bash
# Installs what is missing, builds coracled (release) and runs it with the embedded
# defaults (or /etc/coracle/config.toml if present). Extra arguments go to coracled.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/install-deps.sh
cargo build --release --locked -p coracled -p coracle-monitor
exec ./target/release/coracled "$@"
