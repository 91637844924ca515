"""A throwaway SLURM cluster on namespaced nodes: munged, slurmctld and one slurmd per node, all from Debian's
slurm-wlm and munge, configured in a temp dir (no cgroups, no accounting, root as SlurmUser).

Node k is the SLURM node named after the namespace's hostname, with NodeAddr 10.77.0.k; slurmctld runs on node 1
(the submit host). Each daemon runs in the foreground as a child of the test and is stopped by its pid;
the namespaces' tear-down kills whatever a job left behind there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from .netns import Network

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


class LocalSlurm:
    """Start with `start()`, submit with `sbatch()`, wait with `wait()`, stop with `close()`."""

    def __init__(self, net: Network, workdir: Path, nodes: list[int], cpus: int | None = None):
        self.net, self.dir, self.nodes = net, workdir / "slurm", nodes
        self.cpus = cpus or os.cpu_count() or 1  # every slurmd sees the whole machine; say so, or it drains
        self.procs: list[subprocess.Popen] = []
        self.conf = self.dir / "slurm.conf"

    # -- configuration ---------------------------------------------------------------------------------

    def env(self, **extra) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def write_conf(self) -> None:
        d = self.dir
        for sub in ("munge", "state", "spool", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "munge").chmod(0o755)  # munged wants its socket's directory searchable by all
        head = self.nodes[0]
        lines = [
            "ClusterName=sspotest",
            f"SlurmctldHost={self.net.hostname(head)}({self.net.ip(head)})",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d}/munge/munge.socket",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "ReturnToService=2", "KillWait=5", "InactiveLimit=0",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.%n.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log", f"SlurmdLogFile={d}/log/slurmd.%n.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
        ]
        lines += [f"NodeName={self.net.hostname(k)} NodeAddr={self.net.ip(k)} CPUs={self.cpus} State=UNKNOWN"
                  for k in self.nodes]
        lines.append("PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        # slurmd 22.05 loads a cgroup plugin even with proctrack/linuxproc and task/none; it gets an empty v1
        # hierarchy (a tmpfs in the node's private mount namespace, see _daemon), so it uses no cgroups at all
        (d / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n")
        for k in self.nodes:
            (d / "spool" / self.net.hostname(k)).mkdir(exist_ok=True)
        key = d / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)

    # -- daemons ---------------------------------------------------------------------------------------

    def _daemon(self, name: str, argv: list[str], k: int | None = None) -> subprocess.Popen:
        """argv in the foreground, on node k (or in the root namespace), its output in log/<name>.stdout."""
        log = open(self.dir / "log" / f"{name}.stdout", "w")
        proc = (self.net.popen(k, argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT) if k else
                subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT))
        self.procs.append(proc)
        return proc

    def start(self, timeout_s: float = 60) -> None:
        self.write_conf()
        m = self.dir / "munge"
        self._daemon("munged", ["munged", "-F", "-f", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                      f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
        self._wait_for(lambda: (m / "munge.socket").exists(), timeout_s, "munged's socket")
        self._daemon("slurmctld", ["slurmctld", "-D", "-i"], self.nodes[0])  # -i: ignore state from an earlier run
        for k in self.nodes:
            # `ip netns exec` remounted /sys for the namespace, leaving /sys/fs/cgroup empty: give slurmd a tmpfs there
            self._daemon(f"slurmd{k}", ["sh", "-c", 'mount -t tmpfs sspo-cgroup /sys/fs/cgroup && exec slurmd -D -N "$0"',
                          self.net.hostname(k)], k)
        self._wait_for(self._all_idle, timeout_s, "every node idle in sinfo")

    def _all_idle(self) -> bool:
        out = self.net.run(self.nodes[0], ["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env())
        states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
        return len(states) == len(self.nodes) and all(s == "idle" for s in states.values())

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"SLURM test cluster: no {what} after {timeout_s:g} s (exited: {dead}); "
                                   f"logs:\n{self.logs()}")
            time.sleep(0.5)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted((self.dir / "log").glob("*")) if p.is_file())

    # -- jobs ------------------------------------------------------------------------------------------

    def sbatch(self, argv: list[str], cwd: Path, env: dict) -> str:
        """Submit from the first node (the submit host) with exactly `env` (the job inherits it); returns the job id."""
        out = self.net.run(self.nodes[0], ["sbatch", "--parsable", *argv], env={**env, "SLURM_CONF": str(self.conf)},
                           cwd=str(cwd), timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr}\n{self.logs()}")
        return out.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout_s: float) -> str:
        """Block until the job leaves the queue; returns its final state (from scontrol)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.net.run(self.nodes[0], ["scontrol", "show", "job", job_id], env=self.env())
            state = next((f.split("=", 1)[1] for f in out.stdout.split() if f.startswith("JobState=")), None)
            if state and state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return state
            time.sleep(2)
        self.net.run(self.nodes[0], ["scancel", job_id], env=self.env())
        raise TimeoutError(f"job {job_id} still running after {timeout_s:g} s; logs:\n{self.logs()}")

    def close(self) -> None:
        for proc in reversed(self.procs):  # slurmds, slurmctld, then munged
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
