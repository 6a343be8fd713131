"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd on this machine.

Use the session fixture in a test module with ``from slurm.cluster import slurm_cluster``. It
installs Debian's ``slurmctld slurmd slurm-client munge`` with apt-get when they are missing
(root only), then starts everything from a temporary directory: a private MUNGE key and socket,
a generated ``slurm.conf`` (one node named after this host, two CPUs, one partition, state,
spool and logs in the directory, free TCP ports) and the daemons in the foreground, so that
their PIDs are ours to stop. Nothing system-wide is configured; ``SLURM_CONF`` is exported for
the session so ``sbatch``, ``squeue`` and ``scancel`` talk to this cluster.

Where Slurm cannot be had (not root, no apt-get, a daemon that does not come up) the tests are
skipped with the reason, except when ``CI=true``: there they fail, so a CI run never passes
without having run them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: Programs the cluster needs, all from PACKAGES.
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
PARTITION = "debug"
NODE_CPUS = 2
#: Seconds to wait for the node to come up idle (slurmd registers within a few seconds).
STARTUP_S = 60.0
#: Seconds between the SIGTERM and the SIGKILL of a cancelled job (Slurm's default is 30).
KILL_WAIT_S = 5


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-node cluster.

    Attributes
    ----------
    root
        Temporary directory holding the configuration, MUNGE key and socket, state and logs.
    conf
        The ``slurm.conf``; ``SLURM_CONF`` points at it for the whole session.
    node
        The node's name (this host's short name).
    partition
        The only partition, the default one.
    cpus
        CPUs the node offers to jobs.
    """

    root: Path
    conf: Path
    node: str
    partition: str
    cpus: int

    def logs(self) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def job_ids(self) -> list[str]:
        """Ids of the jobs the controller still knows as pending or running."""
        result = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING", "-o", "%A"],
                                capture_output=True, text=True, check=True)
        return result.stdout.split()


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI=true, where a skipped Slurm test would hide a broken set-up."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Slurm cluster unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"Slurm cluster unavailable: {reason}")


def _install_packages() -> None:
    """Check for root; apt-get install the Slurm and MUNGE packages if a program is missing."""
    if os.geteuid() != 0:
        # SlurmUser=root and SlurmdUser=root: the daemons, and apt-get, need root.
        _unavailable("not root (the one-node cluster runs its daemons as root)")
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        _unavailable(f"{', '.join(missing)} not installed and no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            _unavailable(f"{' '.join(command)} exited {result.returncode}: "
                         f"{result.stderr.strip().splitlines()[-1:]}")
    still = [name for name in PROGRAMS if shutil.which(name) is None]
    if still:
        _unavailable(f"{', '.join(still)} still missing after apt-get install {' '.join(PACKAGES)}")


def _free_port() -> int:
    """A TCP port nothing listens on now (the daemons bind it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _slurm_conf(root: Path, node: str, munge_socket: Path) -> str:
    """slurm.conf for one node on 127.0.0.1, run as root, with nothing outside ``root``."""
    return "\n".join([
        "ClusterName=cinn4most",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        # The package's /etc/slurm/plugstack.conf is not ours to depend on.
        f"PlugStackConfig={root / 'plugstack.conf'}",
        "MailProg=/bin/true",
        # No cgroups in containers: track job processes through /proc, bind no tasks.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2",
        f"KillWait={KILL_WAIT_S}",
        # Use the CPUs below whatever the hardware reports (a CI runner may have more cores).
        "SlurmdParameters=config_overrides",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """Start a daemon in the foreground (its PID is then ours), output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a daemon we started, SIGKILL it if it has not exited within 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_idle(cluster: SlurmCluster, daemons: list[subprocess.Popen]) -> None:
    """Wait until ``sinfo`` reports the node idle; give up if a daemon exits or time runs out."""
    deadline = time.monotonic() + STARTUP_S
    state = ""
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in daemons):
            _unavailable(f"a Slurm daemon exited at start-up\n{cluster.logs()}")
        result = subprocess.run(["sinfo", "-h", "-n", cluster.node, "-o", "%t"],
                                capture_output=True, text=True)
        state = result.stdout.strip()
        if result.returncode == 0 and state == "idle":
            return
        time.sleep(0.5)
    _unavailable(f"node {cluster.node} not idle after {STARTUP_S:.0f} s (state {state!r})\n"
                 f"{cluster.logs()}")


def _cancel_all(cluster: SlurmCluster) -> None:
    """Cancel what tests left queued or running; slurmstepd outlives slurmd otherwise."""
    ids = cluster.job_ids()
    if not ids:
        return
    subprocess.run(["scancel", "--signal=KILL", "--full", *ids], capture_output=True)
    deadline = time.monotonic() + 60
    while cluster.job_ids() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm cluster (see the module docstring); stopped after the session."""
    _install_packages()
    root = Path(tempfile.mkdtemp(prefix="cinn4most-slurm-"))
    # munged refuses a socket whose directory others cannot traverse.
    root.chmod(0o755)
    for name in ("state", "spool"):
        (root / name).mkdir()
    (root / "plugstack.conf").write_text("")
    node = socket.gethostname().split(".")[0]
    munge_key, munge_socket = root / "munge.key", root / "munge.socket"
    subprocess.run(["mungekey", "--create", f"--keyfile={munge_key}"], check=True,
                   capture_output=True)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, munge_socket))
    cluster = SlurmCluster(root=root, conf=conf, node=node, partition=PARTITION, cpus=NODE_CPUS)
    daemons: list[subprocess.Popen] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(conf))
        try:
            daemons.append(_start(["munged", "--foreground", f"--socket={munge_socket}",
                                   f"--key-file={munge_key}", f"--log-file={root / 'munged.log'}",
                                   f"--pid-file={root / 'munged.pid'}",
                                   f"--seed-file={root / 'munged.seed'}"], root / "munged.out"))
            deadline = time.monotonic() + 10
            while not munge_socket.exists() and daemons[0].poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            daemons.append(_start(["slurmctld", "-D", "-i", "-f", str(conf)], root / "slurmctld.out"))
            daemons.append(_start(["slurmd", "-D", "-N", node, "-f", str(conf)], root / "slurmd.out"))
            _wait_idle(cluster, daemons)
            yield cluster
            _cancel_all(cluster)
        finally:
            # slurmd first, then the controller, then the MUNGE daemon both authenticate with.
            for proc in reversed(daemons):
                _stop(proc)
    shutil.rmtree(root, ignore_errors=True)
