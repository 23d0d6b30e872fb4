#!/bin/sh
# Runs ws_exec_client.py (arguments passed on) with the PyPI package websocket-client,
# from a venv at VENV made on first use. Fails loudly when python3-venv or PyPI is
# missing (hack/install-deps.sh installs python3-venv and python3-pip).
# Usage: run.sh VENV ECHO_URL EXIT7_URL CAT_URL BASE64_URL [EXIT7_COMMAND]
set -eu
venv=$1
shift
# Pinned so a new release cannot change what the tests prove.
package=websocket-client==1.9.2
if [ ! -x "$venv/bin/python3" ]; then
    python3 -m venv "$venv" || { echo "python3 -m venv $venv failed: is python3-venv installed?" >&2; exit 1; }
fi
if ! "$venv/bin/python3" -c 'import websocket' 2>/dev/null; then
    "$venv/bin/python3" -m pip install --disable-pip-version-check --quiet "$package" ||
        { echo "pip install $package failed: is PyPI reachable?" >&2; exit 1; }
fi
exec "$venv/bin/python3" "$(dirname "$0")/ws_exec_client.py" "$@"
