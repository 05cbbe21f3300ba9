"""Real servers for the scale-out tests, started on localhost inside the test run:
a PostgreSQL cluster (Debian's postgresql) and a single-node Slurm (slurmctld + slurmd + munged).

Each start function returns None with a reason when the binaries are missing or we are not root,
so the tests skip with that reason on a developer machine; scripts/install_system_deps.sh installs
the packages in CI.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------- PostgreSQL
class Postgres:
    def __init__(self):
        # Not under pytest's tmp dir: that is 0700 root, and the server runs as user postgres.
        self.root = Path(tempfile.mkdtemp(prefix="lab-pg-"))
        self.reason = ""
        self.url = None
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            self.reason = "PostgreSQL server binaries not installed (apt-get install postgresql)"
            return
        if os.geteuid() != 0:
            self.reason = "starting a throwaway PostgreSQL cluster needs root (to run as user postgres)"
            return
        self.bin = Path(bins[-1]).parent
        self.data = self.root / "pgdata"
        self.port = free_port()

    def _as_postgres(self, *args, **kw):
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True, text=True, **kw
        )

    def start(self) -> Postgres:
        if self.reason:
            return self
        shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o755)
        self._as_postgres(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self._as_postgres(
            self.bin / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.data / "server.log",
            "-w",
            "start",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        self._as_postgres(self.bin / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "lab_test")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/lab_test"
        return self

    def stop(self):
        if self.url:
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------- Slurm
SLURM_CONF = """\
ClusterName=lab
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MinJobAge=3600
KillWait=10
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=lab Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    def __init__(self, root: Path):
        self.root, self.reason, self.conf = root, "", None
        missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel") if not shutil.which(b)]
        if missing:
            self.reason = f"Slurm not installed ({', '.join(missing)} missing: apt-get install slurm-wlm munge)"
        elif os.geteuid() != 0:
            self.reason = "starting slurmctld/slurmd/munged needs root"
        self.procs_started = False

    def start(self) -> Slurm:
        if self.reason:
            return self
        for d in ("state", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        host = socket.gethostname()
        self.conf = self.root / "slurm.conf"
        self.conf.write_text(
            SLURM_CONF.format(
                host=host, root=self.root, ctld_port=free_port(), d_port=free_port(), cpus=os.cpu_count() or 1
            )
        )
        env = self.env()
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=env)
        self.procs_started = True

        def node_idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout
            return "idle" in out

        _wait(node_idle, 60, "the Slurm node to become idle")
        return self

    def _start_munge(self):
        ok = subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0
        if ok:
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=False, capture_output=True)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=False, capture_output=True)
        _wait(
            lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0, 20, "munged"
        )

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def stop(self):
        if not self.procs_started:
            return
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            p = self.root / pidfile
            if p.exists():
                try:
                    os.kill(int(p.read_text().strip()), 15)
                except (ValueError, ProcessLookupError):
                    pass
