"""Run a command and record every network address that it, its threads or its children try to reach.

    python tests/netwatch.py LOG COMMAND [ARGS...]   # prints what left the machine; exit 1 if anything did

`strace -f` records each connect, sendto, sendmsg and sendmmsg system call, failed ones included,
whatever made it: Python's socket module, or native code that never passes through it. That is the
point: CocoIndex's engine is Rust, and its usage report starts with one UDP packet to the name server,
over within a millisecond, which neither an audit hook nor a poller of the kernel's socket tables sees.
With seccomp-bpf only those calls stop the process, so the command runs at nearly full speed.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CALLS = "connect,sendto,sendmsg,sendmmsg"
LOCAL_FAMILIES = {"AF_UNIX", "AF_NETLINK", "AF_UNSPEC"}
# a name lookup that leaves through a resolver on this machine: systemd-resolved's own socket
RESOLVER_SOCKETS = ("/run/systemd/resolve/io.systemd.Resolve",)
DNS_PORT = 53

_CALL = re.compile(r"^(\d+)\s+(\w+)\(")
_ADDRESS = re.compile(r"\{sa_family=(AF_\w+)(.*?)\}")
_PORT = re.compile(r"_port=htons\((\d+)\)")
_HOST = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
_PATH = re.compile(r'sun_path=@?"([^"]*)"')


@dataclass(frozen=True)
class Attempt:
    pid: int
    call: str
    family: str
    host: str = ""  # the IP address, or the unix socket's path
    port: int = 0

    def leaves_the_machine(self) -> bool:
        if self.family == "AF_UNIX":
            return self.host in RESOLVER_SOCKETS
        if self.family in LOCAL_FAMILIES:
            return False
        if self.family not in ("AF_INET", "AF_INET6"):
            return True  # packet, bluetooth, vsock...: nothing this project has a reason to open
        if self.port == DNS_PORT:
            return True  # a name server on loopback (127.0.0.53) passes the question on
        address = ipaddress.ip_address(self.host.split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not (address.is_loopback or address.is_unspecified)


def available() -> str | None:
    """Why the watcher cannot run here, or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (`make test` installs it; Debian/Ubuntu: apt-get install strace)"
    return None


def watched(log: Path, *command: str) -> list[str]:
    """`command` under the watcher, which writes its records to `log`."""
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-e", f"trace={CALLS}", "-e", "signal=none", "-s", "0"] + [
        "-o",
        str(log),
        "--",
        *command,
    ]


def attempts(log: Path) -> list[Attempt]:
    found: list[Attempt] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        call = _CALL.match(line)
        if call is None:
            continue  # "<... resumed>" halves and exits: the address is on the first half
        for family, body in _ADDRESS.findall(line):
            port = _PORT.search(body)
            host = _HOST.search(body)
            path = _PATH.search(body)
            found.append(
                Attempt(
                    pid=int(call.group(1)),
                    call=call.group(2),
                    family=family,
                    host=(host.group(1) or host.group(2)) if host else (path.group(1) if path else ""),
                    port=int(port.group(1)) if port else 0,
                )
            )
    return found


def outbound(log: Path) -> list[Attempt]:
    """What the command tried to reach beyond this machine."""
    return [a for a in attempts(log) if a.leaves_the_machine()]


def main() -> int:
    log, *command = sys.argv[1:]
    missing = available()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    subprocess.run(watched(Path(log), *command))
    found = outbound(Path(log))
    for attempt in found:
        print(f"{attempt.call} {attempt.family} {attempt.host} port {attempt.port} (pid {attempt.pid})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
