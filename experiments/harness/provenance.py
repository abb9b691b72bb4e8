"""Provenance of every measurement this project writes: the commit (and whether the checkout differed
from it), the machine and the package versions. Every results writer takes them from here."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any


def _git(*args: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def code_version() -> dict[str, Any]:
    """The commit of the code that runs (the checkout holding this package) and whether tracked
    files differ from it. A copy with no git history (a lent accelerator machine's) takes the commit
    from ``QSM_JAX_COMMIT`` (suffixed "+dirty" for uncommitted changes), set by whoever made the copy
    (``experiments/device/command.sh``, the cluster launchers)."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        given = os.environ.get("QSM_JAX_COMMIT") or "unknown"
        return {"commit": given.removesuffix("+dirty"), "dirty": given.endswith("+dirty")}
    return {"commit": commit, "dirty": bool(_git("status", "--porcelain", "-uno"))}


def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``) with its family and model numbers, else what
    ``platform`` knows, e.g. "AMD EPYC (cpu family 26, model 2)". A virtual machine's model name can be
    as bare as "AMD EPYC" for CPU generations whose speeds differ about 2x; with the numbers, units'
    rates are compared only between units that ran on the same generation."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith("flags"))
    except OSError:
        fields = {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = [f"{k} {fields[k]}" for k in ("cpu family", "model") if fields.get(k)]
    return f"{fields['model name']} ({', '.join(numbers)})" if numbers else fields["model name"]


def machine() -> dict[str, Any]:
    """CPU model, usable cores and JAX devices of this process."""
    cpu = cpu_model()
    import jax

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "devices": [str(d.device_kind) for d in jax.devices()],
        "host": platform.node(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that decide a unit's numbers (the simulator above all)."""
    from importlib import metadata

    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "gymnasium", "mujoco", "dm-control", "shimmy", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def commit_label() -> str:
    """The short commit of the code that runs, with "+dirty" when tracked files differ from it."""
    code = code_version()
    return code["commit"][:7] + ("+dirty" if code["dirty"] else "")


def machine_line() -> str:
    """One line naming this machine: CPU model, usable cores, OS, and JAX's version and devices."""
    import jax

    m = machine()
    devices = ", ".join(sorted({f"{d.platform}:{d.device_kind}" for d in jax.devices()}))
    return f"{m['cpu']}, {m['cores']} cores, {platform.system()}; JAX {jax.__version__} on {devices}"


def stamp() -> dict[str, str]:
    """What a results file states about how it was made: ``command`` (this process's command line),
    ``commit`` (``commit_label``), ``machine`` (``machine_line``) and ``date`` (UTC)."""
    return {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit_label(),
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
