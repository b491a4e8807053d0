# Engine sets on clusters for the driver (issue #15).
#
# srun: inside a Slurm allocation, `srun -n N ipengine` starts the engines
# on the allocation's nodes. ipyparallel's MPI launcher would add `--mpi`
# (and so need mpi4py in every engine); this one is that launcher with
# `srun` for `mpiexec` and plain engines.
#
# ssh: a host that cannot be reached is named when the engines cannot
# start (ipyparallel only says "Unable to get remote shell information").
#
# Batch systems (Slurm, PBS, SGE, LSF): every engine is a job of its own,
# so that a job the scheduler cancels or loses takes one engine with it,
# not all, and its
# tasks are retried on the others; and a job that has not registered by
# the startup deadline is named with its queue state ("PENDING
# (Resources)"), so a queue wait reads as one, not as a silent hang.
#
# Joined into the driver program after tasks.py (core/src/ipp/mod.rs).

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks import safe_output, tail

BATCH_LAUNCHERS = ("slurm", "pbs", "sge", "lsf")


def srun_engine_launcher():
    """The srun engine-set launcher class (ipyparallel imported lazily)."""
    from ipyparallel.cluster.launcher import MPIEngineSetLauncher

    class SrunEngineSetLauncher(MPIEngineSetLauncher):
        """`srun -n N [mpi_args] ipengine ...` in the current allocation."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if list(self.mpi_cmd) == ["mpiexec"]:
                self.mpi_cmd = ["srun"]

        @property
        def program(self):
            return list(self.engine_cmd)

    return SrunEngineSetLauncher


def is_batch_system(launcher):
    """Does this engine launcher submit batch jobs?"""
    return str(launcher or "").lower() in BATCH_LAUNCHERS


def slurm_job_state(job_id):
    """(state, reason) of a Slurm job as squeue shows it, or None (not a
    Slurm job, squeue missing, or the job already gone from the queue)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return None
    state, _, reason = lines[0].partition("|")
    return state.strip(), reason.strip()


def batch_job_failure(es_id, es):
    """What became of an engine set started as a batch job: its job id and
    queue state where the scheduler still knows it."""
    item = {"engine": es_id, "state": str(getattr(es, "state", "?")),
            "output": tail(safe_output(es))}
    job = getattr(es, "job_id", "") or ""
    if not job:
        item["state"] = f"no batch job was submitted ({item['state']})"
        return item
    queued = slurm_job_state(job)
    if queued is None:
        item["state"] = f"batch job {job} ({item['state']}, no longer queued)"
    else:
        state, reason = queued
        why = f" ({reason})" if reason and reason != "None" else ""
        item["state"] = f"batch job {job} still {state}{why}"
    return item


def is_remote(launcher):
    """An engine launcher whose engine runs on another host (ssh): its
    local process is not the engine."""
    return "SSH" in type(launcher).__name__


def ssh_hosts(cfg):
    """The user@host locations of SSHEngineSetLauncher.engines."""
    conf = (cfg.get("launcher_config") or {}).get("SSHEngineSetLauncher") or {}
    return list((conf.get("engines") or {}).keys())


def ssh_unreachable(cfg, timeout=10):
    """[(location, why)] for each ssh host that does not answer `true`."""
    conf = cfg.get("launcher_config") or {}
    ssh_cmd = list((conf.get("SSHLauncher") or {}).get("ssh_cmd") or ["ssh"])
    out = []
    for location in ssh_hosts(cfg):
        cmd = ssh_cmd + ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
                         location, "true"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            out.append((location, str(exc)))
            continue
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            out.append((location, lines[-1] if lines else f"exit code {done.returncode}"))
    return out


def engines_not_started(cfg, exc):
    """The error for engines that could not be started, naming the ssh
    hosts that cannot be reached."""
    message = f"the engines could not be started ({cfg.get('engine_launcher')} launcher): {exc}"
    if cfg.get("engine_launcher") == "ssh":
        gone = ssh_unreachable(cfg)
        if gone:
            message += "; unreachable over ssh: " + "; ".join(
                f"{where} ({why})" for where, why in gone)
    return message
