#!/usr/bin/env python3
"""Exec against Coracle's streaming server with websocket-client from PyPI: a
WebSocket implementation this project did not write, speaking the channel protocol
as Kubernetes documents it (apimachinery wsstream, client-go remotecommand v5).

Usage: ws_exec_client.py ECHO_URL EXIT7_URL CAT_URL BASE64_URL [EXIT7_COMMAND]

The URLs come from the Rust test that started the server with its fake runtime:
ECHO_URL runs `echo hello from python`, EXIT7_URL `exit 7`, CAT_URL `cat` with stdin,
BASE64_URL `echo base64 works`. EXIT7_COMMAND is how the exit-7 command is written
in kubelet's message (default `exit 7`; `sh -c exit 7` in a real container). Exits
non-zero with a message on any mismatch.
"""

import base64
import json
import struct
import sys

import websocket  # websocket-client

V5 = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
CLOSE_SIGNAL = 255


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def expect(what, actual, wanted):
    if actual != wanted:
        fail(f"{what}: got {actual!r}, want {wanted!r}")


def session(url, protocol, stdin=None):
    """Runs one exec; returns the bytes received per channel."""
    ws = websocket.create_connection(
        url.replace("http://", "ws://", 1), subprotocols=[protocol], timeout=20
    )
    expect("negotiated subprotocol", ws.getsubprotocol(), protocol)
    base64_codec = protocol.startswith("base64.")
    if stdin is not None:
        ws.send_binary(bytes([STDIN]) + stdin)
        # v5: [255, channel] closes the channel; the process sees EOF on stdin.
        ws.send_binary(bytes([CLOSE_SIGNAL, STDIN]))
    channels = {}
    while True:
        opcode, data = ws.recv_data(control_frame=False)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            # client-go treats anything but a normal closure as an error.
            expect("close code", code, 1000)
            break
        if isinstance(data, str):
            data = data.encode()
        if not data:
            continue
        if base64_codec:
            expect("frame type for base64", opcode, websocket.ABNF.OPCODE_TEXT)
            channel, payload = data[0] - ord("0"), base64.b64decode(data[1:])
        else:
            expect("frame type", opcode, websocket.ABNF.OPCODE_BINARY)
            channel, payload = data[0], data[1:]
        channels.setdefault(channel, bytearray()).extend(payload)
    ws.close()
    return channels


def status(channels):
    raw = bytes(channels.get(ERROR, b""))
    try:
        return json.loads(raw)
    except ValueError:
        fail(f"error channel is not a JSON Status: {raw!r}")


def main():
    if len(sys.argv) not in (5, 6):
        fail(__doc__)
    echo_url, exit7_url, cat_url, base64_url = sys.argv[1:5]
    exit7_command = sys.argv[5] if len(sys.argv) == 6 else "exit 7"

    out = session(echo_url, V5)
    expect("echo stdout", bytes(out.get(STDOUT, b"")), b"hello from python\n")
    expect("echo status", status(out), {"metadata": {}, "status": "Success"})

    out = session(exit7_url, V5)
    got = status(out)
    expect("exit 7 status", got.get("status"), "Failure")
    expect("exit 7 reason", got.get("reason"), "NonZeroExitCode")
    expect("exit 7 causes", got.get("details", {}).get("causes"), [{"reason": "ExitCode", "message": "7"}])
    expect(
        "exit 7 message",
        got.get("message"),
        f"command terminated with non-zero exit code: error executing command [{exit7_command}], exit code 7",
    )

    out = session(cat_url, V5, stdin=b"piped through python\n")
    expect("cat stdout", bytes(out.get(STDOUT, b"")), b"piped through python\n")
    expect("cat status", status(out).get("status"), "Success")

    out = session(base64_url, "base64.channel.k8s.io")
    expect("base64 stdout", bytes(out.get(STDOUT, b"")), b"base64 works\n")
    # Before v4 the error channel only carries failures, as text.
    expect("base64 error channel", bytes(out.get(ERROR, b"")), b"")

    print("ok: websocket-client", websocket.__version__)


if __name__ == "__main__":
    main()
