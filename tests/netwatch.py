"""Run a Python script and log every network address it tries to reach.

    python tests/netwatch.py LOG main.py index

Two watchers, because neither sees everything alone:
- an audit hook (`sys.addaudithook`) logs each `socket.connect`, `socket.sendto` and
  `socket.getaddrinfo` made through Python's socket module, whatever the thread, however brief;
- a poller reads the kernel's TCP/UDP tables every few milliseconds for the sockets this process
  holds, which also catches connections opened by native code (Rust, C libraries) that bypasses
  Python's socket module, as long as they last longer than one poll.
Each line of LOG is a JSON object: {"via", "family", "address"}; the test decides what is allowed.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_log: Any = None
_seen: set[str] = set()


def _record(via: str, family: str, address: Any) -> None:
    line = json.dumps({"via": via, "family": family, "address": address}, default=repr)
    with _lock:
        if line in _seen:
            return
        _seen.add(line)
        _log.write(line + "\n")
        _log.flush()


def _family(sock: Any) -> str:
    try:
        return socket.AddressFamily(sock.family).name
    except (ValueError, AttributeError):
        return str(getattr(sock, "family", "?"))


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if isinstance(address, bytes):
            address = address.decode("utf-8", "replace")
        _record(event, _family(sock), list(address) if isinstance(address, tuple) else address)
    elif event == "socket.getaddrinfo":
        _record(event, "name", [args[0] if not isinstance(args[0], bytes) else args[0].decode(), args[1]])


def _hex_address(text: str) -> list[Any]:
    """`0100007F:1F90` (the kernel's little-endian words) → ["127.0.0.1", 8080]."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # each 32-bit word is in host byte order (little-endian on the machines this runs on)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return [socket.inet_ntop(family, words), int(port, 16)]


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _poll(stop: threading.Event) -> None:
    tables = [(name, Path(f"/proc/self/net/{name}")) for name in ("tcp", "tcp6", "udp", "udp6")]
    while not stop.wait(0.005):
        try:
            mine = _socket_inodes()
            for name, table in tables:
                for row in table.read_text().splitlines()[1:]:
                    fields = row.split()
                    # 0A is LISTEN: a listening socket reaches nothing
                    if len(fields) < 10 or fields[9] not in mine or fields[3] == "0A":
                        continue
                    remote = _hex_address(fields[2])
                    if remote[1] != 0:
                        _record(f"kernel.{name}", name, remote)
        except (OSError, ValueError):
            continue


def main() -> None:
    global _log
    log_path, script, *rest = sys.argv[1:]
    _log = open(log_path, "a")  # noqa: SIM115  (open for the life of the process)
    sys.addaudithook(_hook)
    stop = threading.Event()
    threading.Thread(target=_poll, args=(stop,), daemon=True, name="netwatch").start()
    sys.argv = [script, *rest]
    sys.path[0] = str(Path(script).resolve().parent)  # as if the script had been run directly
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        stop.set()


if __name__ == "__main__":
    main()
