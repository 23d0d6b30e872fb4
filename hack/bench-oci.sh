#!/bin/bash
# Benchmark of the OCI executor: `run` (create + start + wait + delete) of /bin/true,
# N times (default 100), on the same busybox bundle, for coracle-oci and for runc
# (Debian's /usr/sbin/runc), printing median and p95 in milliseconds.
#
#   hack/bench-oci.sh [N] [coracle-oci binary]
#
# Needs root. Both runtimes create and remove the container cgroup (v1: one directory
# per controller) for each container.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100}
BIN=${2:-target/release/coracle-oci}
RUNC=${RUNC:-/usr/sbin/runc}
[ "$(id -u)" -eq 0 ] || { echo "bench-oci.sh: run as root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench-oci.sh: build $BIN first (cargo build --release -p coracle-oci)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/coracle-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
BUNDLE=$WORK/bundle
mkdir -p "$BUNDLE/rootfs"/{bin,etc,proc,sys,dev,tmp}
cp /bin/busybox "$BUNDLE/rootfs/bin/"
for applet in $(/bin/busybox --list-full); do
    mkdir -p "$BUNDLE/rootfs/$(dirname "$applet")"
    [ -e "$BUNDLE/rootfs/$applet" ] || ln -s /bin/busybox "$BUNDLE/rootfs/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$BUNDLE/rootfs/etc/passwd"
echo 'root:x:0:' > "$BUNDLE/rootfs/etc/group"
(cd "$BUNDLE" && "$RUNC" spec)
python3 - "$BUNDLE/config.json" <<'PY'
import json, sys
p = sys.argv[1]
s = json.load(open(p))
s["process"]["terminal"] = False
s["process"]["args"] = ["/bin/true"]
json.dump(s, open(p, "w"), indent=1)
PY

# run_series NAME BINARY: prints "NAME median p95" in ms.
run_series() {
    local name=$1 bin=$2 root=$WORK/state-$1 times=$WORK/times-$1
    : > "$times"
    for i in $(seq 1 "$N"); do
        local t0 t1
        t0=$(date +%s%N)
        "$bin" --root "$root" run --bundle "$BUNDLE" "bench-$name-$i" < /dev/null > /dev/null
        t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000 )) >> "$times"
    done
    sort -n "$times" | awk -v name="$name" '
        { v[NR] = $1 }
        END {
            med = v[int((NR + 1) / 2)]; p95 = v[int(NR * 0.95 + 0.999)]
            printf "%-12s median %7.2f ms   p95 %7.2f ms   (n=%d)\n", name, med / 1000, p95 / 1000, NR
        }'
}

echo "create+start+wait+delete of /bin/true (\`run\`), $N times each"
run_series coracle-oci "$BIN"
run_series runc "$RUNC"
