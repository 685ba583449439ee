"""A single-node Slurm on localhost for tests: munge, slurmctld and slurmd from Debian's packages
(slurm-wlm, munge), a slurm.conf of its own (free ports; state, pid and log files under one
directory; written to /etc/slurm, marked, since job steps look only there, and removed on stop), a
fake GPU gres and partitions named as in profiles/slurm ("cpu", "gpu").

    python tests/slurm/localslurm.py start DIR    # prints the SLURM_CONF to export
    python tests/slurm/localslurm.py stop DIR

Facts this relies on (Debian bookworm, Slurm 22.05): no systemd needed (the daemons daemonise and
write pid files); without slurmdbd, sacct does not work, so Snakemake's plugin must poll squeue and
MinJobAge must outlast its status checks; a gres with File=/dev/null schedules as a GPU (Count=
alone leaves the node INVAL); SlurmdParameters=config_overrides lets the node advertise the memory
the profile asks for (nothing enforces it: no cgroups).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
# Job steps (srun inside a job) find the configuration only at the default path: SLURM_CONF does not
# reach them. So the config goes to /etc/slurm, marked, and is removed again by stop().
CONF_DIR = Path("/etc/slurm")
MARK = "# autoqra test cluster (tests/slurm/localslurm.py); removed when it stops\n"


def missing() -> str | None:
    """Why a local Slurm cannot be started here (None if it can)."""
    absent = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if absent:
        return f"Slurm is not installed (missing {absent}); apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key is missing (the munge package creates it)"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and not conf.read_text().startswith(MARK):
        return f"{conf} belongs to a Slurm already configured here; not overwriting it"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    def __init__(self, root: Path, gpus: int = 2, memory_mb: int = 256000):
        self.root = Path(root).resolve()
        self.conf = CONF_DIR / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.gpus, self.memory_mb = gpus, memory_mb
        self.started_munge = False
        self.ports = _free_ports(2)  # never the default 6817/6818 of a Slurm that may run here

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        gpu_files = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random"][: self.gpus]
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(MARK + f"""ClusterName=autoqra-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ports[0]}
SlurmdPort={self.ports[1]}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={self.memory_mb} Gres=gpu:a100:{self.gpus} State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
""")
        gres = "".join(f"NodeName={self.host} Name=gpu Type=a100 File={f}\n" for f in gpu_files)
        (CONF_DIR / "gres.conf").write_text(MARK + "AutoDetect=off\n" + gres)

    def _munge_ok(self) -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True).stdout
            subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=10, check=True)
            return True
        except (OSError, subprocess.SubprocessError):
            return False

    def start(self, timeout: float = 60.0) -> None:
        why = missing()
        if why:
            raise RuntimeError(why)
        self.write_config()
        if not self._munge_ok():
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", _sbin("munged")], check=True, timeout=30)
            self.started_munge = True
            self._wait(self._munge_ok, timeout, "munged")
        subprocess.run([_sbin("slurmctld"), "-f", str(self.conf), "-i"], check=True, timeout=30, env=self.env)
        subprocess.run([_sbin("slurmd"), "-f", str(self.conf)], check=True, timeout=30, env=self.env)
        self._wait(self._node_idle, timeout, "the node to become idle")
        (self.root / "munge.started").write_text("1" if self.started_munge else "0")

    def _node_idle(self) -> bool:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return res.returncode == 0 and res.stdout.strip().startswith("idle")

    @staticmethod
    def _wait(ok, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if ok():
                return
            time.sleep(0.5)
        raise RuntimeError(f"local Slurm: timed out waiting for {what}")

    def cancel_all(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env, timeout=30)

    def stop(self) -> None:
        """Cancel our jobs and stop the daemons we started (by their pid files)."""
        if self.conf.exists() and self.conf.read_text().startswith(MARK):
            self.cancel_all()
        for name in ("slurmd", "slurmctld"):
            _kill_pidfile(self.root / f"{name}.pid")
        for name in ("slurm.conf", "gres.conf"):
            f = CONF_DIR / name
            if f.exists() and f.read_text().startswith(MARK):
                f.unlink()
        started = (self.root / "munge.started")
        if self.started_munge or (started.exists() and started.read_text() == "1"):
            _kill_pidfile(Path("/run/munge/munged.pid"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kill_pidfile(path: Path, timeout: float = 20.0) -> None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    cluster = LocalSlurm(where)
    if action == "start":
        cluster.start()
        print(cluster.conf)
    else:
        cluster.stop()
