#!/bin/bash
# Installs what building, running and testing Coracle needs on Debian, as root.
# Idempotent: installs only what is missing.
set -euo pipefail

# protobuf-compiler: protoc for the CRI protos (k8s-cri's build script).
# libseccomp-dev, pkg-config: the seccomp filter compiler of crates/oci.
# busybox-static, docker-registry, python3, zstd: test images and their registry.
# nftables: the nft binary for the bridge network's masquerade and hostPort rules;
# iproute2, util-linux (nsenter): cleanup and probes in crates/net's root tests.
# containernetworking-plugins: the CNI plugins (bridge, host-local, loopback, portmap)
# that the CNI-mode tests run for real.
# python3-venv, python3-pip: crates/streaming's external-client test installs the PyPI
# package websocket-client into a venv under target/.
DEBIAN_PACKAGES=(protobuf-compiler libseccomp-dev pkg-config busybox-static docker-registry python3 python3-venv python3-pip zstd ca-certificates nftables iproute2 util-linux containernetworking-plugins)
MIN_RUST=1.85

die() { echo "install-deps: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, and Coracle itself, need it)"

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12's packaged Rust is too old for the CRI crates (edition 2024); Coracle
# needs a rustup toolchain, which cannot be fetched from here if it is absent.
command -v cargo >/dev/null || die "cargo not found: install Rust >= $MIN_RUST with rustup"
rust_version="$(rustc --version | awk '{print $2}')"
[ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V | head -1)" = "$MIN_RUST" ] \
    || die "rustc $rust_version is older than $MIN_RUST"
