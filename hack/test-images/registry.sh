#!/bin/bash
# Start/stop a throwaway local OCI registry for Coracle's tests.
#
#   registry.sh start DIR   -> prints HOST:PORT, e.g. 127.0.0.1:40123
#   registry.sh stop DIR
#
# Needs Debian's docker-registry package (/usr/bin/docker-registry, distribution 2.8)
# and python3 (only to pick a free port and probe /v2/).
#
# Layout of DIR (the Rust e2e harness does the same thing itself):
#   DIR/config.yml    registry-config.yml.in with @PORT@ -> the port and
#                     @ROOT@ -> DIR/storage (absolute path)
#   DIR/storage/      blob and manifest storage
#   DIR/registry.log  stdout+stderr of `docker-registry serve DIR/config.yml`
#   DIR/pid           pid of the registry process
#   DIR/addr          127.0.0.1:PORT, written only once GET /v2/ answered 200
# The config: plain HTTP on 127.0.0.1:PORT, no auth, delete enabled, log level
# warn, no access log, no redis/cache, storage health check and upload purging off.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/registry-config.yml.in"
REGISTRY_BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"
READY_TIMEOUT_S=10
PORT_ATTEMPTS=5

die() { echo "registry.sh: $*" >&2; exit 1; }

# Bind port 0 and report what the kernel chose. There is a small window before
# the registry binds it, hence the retry loop in start_registry.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

v2_is_ready() {
    python3 - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen("http://%s/v2/" % sys.argv[1], timeout=1) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

write_config() { # DIR PORT
    sed -e "s|@PORT@|$2|g" -e "s|@ROOT@|$1/storage|g" "$TEMPLATE" > "$1/config.yml"
}

# The pid file may be stale (reboot, crash): only trust it if that pid is still
# our registry serving this DIR's config.
pid_is_our_registry() { # DIR PID
    local cmdline
    cmdline="$(tr '\0' ' ' < "/proc/$2/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *docker-registry*"$1/config.yml"* ]]
}

# Wait until the registry answers, dies, or the deadline passes.
# Returns 0 ready, 1 died, 2 timed out.
wait_ready() { # ADDR PID
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        kill -0 "$2" 2>/dev/null || return 1
        v2_is_ready "$1" && return 0
        sleep 0.1
    done
    return 2
}

start_registry() { # DIR
    local dir="$1" port pid attempt status
    [[ -x "$REGISTRY_BIN" ]] || die "$REGISTRY_BIN not found (apt-get install docker-registry)"
    [[ -f "$TEMPLATE" ]] || die "missing config template $TEMPLATE"
    mkdir -p "$dir/storage"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/pid" ]] && pid_is_our_registry "$dir" "$(cat "$dir/pid")"; then
        die "a registry for $dir is already running (pid $(cat "$dir/pid"), addr $(cat "$dir/addr" 2>/dev/null))"
    fi
    rm -f "$dir/pid" "$dir/addr"
    for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
        port="$(free_port)"
        write_config "$dir" "$port"
        # setsid: the registry must outlive this script and not get its signals.
        setsid "$REGISTRY_BIN" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" > "$dir/pid"
        status=0
        wait_ready "127.0.0.1:$port" "$pid" || status=$?
        if ((status == 0)); then
            echo "127.0.0.1:$port" > "$dir/addr"
            echo "127.0.0.1:$port"
            return 0
        fi
        if ((status == 1)) && grep -q "address already in use" "$dir/registry.log"; then
            echo "registry.sh: port $port was taken, retrying ($attempt/$PORT_ATTEMPTS)" >&2
            rm -f "$dir/pid"
            continue
        fi
        kill "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
        if ((status == 1)); then
            die "docker-registry exited during startup; $dir/registry.log says:
$(tail -n 20 "$dir/registry.log")"
        fi
        die "docker-registry did not answer GET http://127.0.0.1:$port/v2/ within ${READY_TIMEOUT_S}s; $dir/registry.log says:
$(tail -n 20 "$dir/registry.log")"
    done
    die "could not find a free port after $PORT_ATTEMPTS attempts"
}

stop_registry() { # DIR
    local dir pid deadline
    dir="$(cd "$1" 2>/dev/null && pwd)" || die "no such directory: $1"
    [[ -f "$dir/pid" ]] || { echo "registry.sh: no $dir/pid, nothing to stop" >&2; return 0; }
    pid="$(cat "$dir/pid")"
    if ! pid_is_our_registry "$dir" "$pid"; then
        echo "registry.sh: pid $pid is not our registry any more, removing stale $dir/pid" >&2
        rm -f "$dir/pid" "$dir/addr"
        return 0
    fi
    kill -TERM "$pid"
    # Not our child, so `wait` cannot be used: poll until the pid is gone.
    deadline=$((SECONDS + 10))
    while pid_is_our_registry "$dir" "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if pid_is_our_registry "$dir" "$pid"; then
        echo "registry.sh: pid $pid ignored SIGTERM for 10s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        while pid_is_our_registry "$dir" "$pid"; do sleep 0.1; done
    fi
    rm -f "$dir/pid" "$dir/addr"
}

case "${1:-}:${2:-}" in
    start:?*) start_registry "$2" ;;
    stop:?*) stop_registry "$2" ;;
    *) echo "usage: registry.sh start|stop DIR" >&2; exit 2 ;;
esac
