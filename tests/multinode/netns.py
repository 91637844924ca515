"""Several "nodes" on one machine: one network namespace per node, joined by a bridge.

Node k lives in namespace `<prefix>-k` with address 10.77.0.k/24 on a veth whose other end is on the bridge,
its own hostname (a UTS namespace per command) and an /etc/hosts naming every node. Nothing is bound on the
machine's own interfaces: the root namespace only holds the bridge, with no address, so all traffic of a test
cluster stays between its namespaces.

Tear-down (`close`) kills the processes of each namespace by pid (`ip netns pids`), then deletes the
namespaces, the bridge and /etc/netns/<ns>; it runs even when the test failed (fixtures call it in `finally`).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.77.0"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no `ip`, or a sandbox without CAP_NET_ADMIN)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _subnet_in_use() -> bool:
    return f"inet {SUBNET}." in _ip("-o", "addr", check=False).stdout


class Network:
    """Namespaced nodes node1..nodeN at 10.77.0.1..N; `add_node()` adds one more at any time."""

    _instances = itertools.count()

    def __init__(self, prefix: str | None = None):
        # unique per network: the kernel frees a deleted namespace's links asynchronously, so a second network
        # of the same test process must not reuse the first one's names
        self.prefix = prefix or f"sspo{os.getpid() % 100000}n{next(self._instances)}"
        self.bridge = f"{self.prefix}br"
        self.nodes: list[str] = []  # namespace names, node k at index k - 1
        if _subnet_in_use():
            raise NetnsUnavailable(f"{SUBNET}.0/24 is already in use on this machine (ip -o addr)")
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except (OSError, subprocess.CalledProcessError) as exc:
            raise NetnsUnavailable(f"cannot create a bridge: {getattr(exc, 'stderr', exc)}") from None
        _ip("link", "set", self.bridge, "up")

    # -- topology --------------------------------------------------------------------------------------

    def add_node(self) -> int:
        """A new namespace with its own address; returns its node number k (address 10.77.0.k)."""
        k = len(self.nodes) + 1
        ns, host_end = f"{self.prefix}-{k}", f"{self.prefix}v{k}"
        try:
            _ip("netns", "add", ns)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise NetnsUnavailable(f"ip netns add {ns}: {getattr(exc, 'stderr', exc)}") from None
        self.nodes.append(ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host_end, "master", self.bridge, "up")
        for args in (["link", "set", "lo", "up"], ["addr", "add", f"{self.ip(k)}/24", "dev", "eth0"],
                     ["link", "set", "eth0", "up"]):
            _ip("-n", ns, *args)
        self._write_hosts()
        return k

    def ip(self, k: int) -> str:
        return f"{SUBNET}.{k}"

    def hostname(self, k: int) -> str:
        return f"{self.prefix}-node{k}"

    def _write_hosts(self) -> None:
        # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: every node resolves every node
        hosts = "127.0.0.1 localhost\n" + "".join(f"{self.ip(k)} {self.hostname(k)}\n" for k in self.node_numbers)
        for ns in self.nodes:
            path = Path("/etc/netns") / ns
            path.mkdir(parents=True, exist_ok=True)
            (path / "hosts").write_text(hosts)

    @property
    def node_numbers(self) -> list[int]:
        return list(range(1, len(self.nodes) + 1))

    # -- running things on a node ---------------------------------------------------------------------

    def command(self, k: int, argv: list[str]) -> list[str]:
        """argv run inside node k: its network namespace and a UTS namespace with the node's hostname."""
        return ["ip", "netns", "exec", self.nodes[k - 1], "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname(k), *argv]

    def run(self, k: int, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(k, argv), **kwargs)

    def popen(self, k: int, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(k, argv), **kwargs)

    def pids(self, k: int) -> list[int]:
        out = _ip("netns", "pids", self.nodes[k - 1], check=False).stdout
        return [int(p) for p in out.split()]

    def argvs(self, k: int) -> dict[int, str]:
        """{pid: argv} of node k's processes, read from /proc without starting a process (cheap to poll)."""
        inode = os.stat(f"/run/netns/{self.nodes[k - 1]}").st_ino
        found = {}
        for entry in os.scandir("/proc"):
            try:
                if entry.name.isdigit() and os.stat(f"/proc/{entry.name}/ns/net").st_ino == inode:
                    argv = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                    found[int(entry.name)] = argv.replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # it ended while we looked
                continue
        return found

    # -- tear-down -------------------------------------------------------------------------------------

    def stop_node(self, k: int, grace_s: float = 5.0) -> None:
        """SIGTERM every process of node k, SIGKILL what is left after grace_s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids(k):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while self.pids(k) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids(k):
                return

    def close(self) -> None:
        for k in reversed(self.node_numbers):
            self.stop_node(k)
        for k, ns in enumerate(self.nodes, start=1):
            _ip("link", "del", f"{self.prefix}v{k}", check=False)  # the veth pair, now rather than when the kernel frees ns
            _ip("netns", "del", ns, check=False)
            hosts = Path("/etc/netns") / ns
            (hosts / "hosts").unlink(missing_ok=True)
            if hosts.is_dir():
                hosts.rmdir()
        self.nodes.clear()
        _ip("link", "del", self.bridge, check=False)
