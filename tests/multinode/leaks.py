"""Where an auth token could leak, looked at the way an attacker on a node would: every process's argv and
environment (sampled all along a test module, so the short-lived ones are seen too), and every file the run
wrote (Ray's temp dirs and logs, SLURM's logs, the job's output).

The sampler reads /proc directly and keeps the processes whose network namespace is one of the test network's,
so it costs little CPU: no `ip netns pids` per sample.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


class ProcessSampler:
    """Every `interval_s`, the argv and environment of each process in the network's namespaces (also of
    namespaces added later). `start()`, `stop()`; then `processes` (how many distinct ones were seen) and
    `with_secret(secret)`."""

    def __init__(self, net, interval_s: float = 0.2):
        self.net, self.interval_s = net, interval_s
        self.seen: dict[tuple[int, bytes], bytes] = {}  # (pid, argv) -> environment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        inodes = set()
        for name in list(self.net.nodes):
            try:
                inodes.add(_netns_inode(name))
            except OSError:
                pass
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry.name}/ns/net").st_ino not in inodes:
                    continue
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                key = (int(entry.name), argv)
                if key not in self.seen and argv:
                    self.seen[key] = Path(f"/proc/{entry.name}/environ").read_bytes()
            except OSError:  # the process ended while we looked
                continue

    @property
    def processes(self) -> int:
        return len({pid for pid, _ in self.seen})

    def with_secret(self, secret: str) -> list[str]:
        """'argv of <pid>: <argv>' / 'environment of <pid>: <argv>' for each process that held it."""
        s = secret.encode()
        found = []
        for (pid, argv), environ in self.seen.items():
            shown = argv.replace(b"\0", b" ").decode(errors="replace")[:200]
            if s in argv:
                found.append(f"argv of {pid}: {shown}")
            if s in environ:
                found.append(f"environment of {pid}: {shown}")
        return found


def files_with_secret(secret: str, roots: list[Path], skip: tuple[Path, ...] = ()) -> tuple[int, list[Path]]:
    """(how many regular files were read, those that contain the secret) under roots, skipping `skip`."""
    s, read, found = secret.encode(), 0, []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
            for name in filenames:
                path = Path(dirpath, name)
                if path in skip or path.is_symlink() or not path.is_file():
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                read += 1
                if s in data:
                    found.append(path)
    return read, found
