"""What a benchmark ran on: machine, versions, threads, code. Stated next to every number."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from worker.engine.environment import cpu_model

ROOT = Path(__file__).resolve().parent.parent


# One reader of the CPU's model for runs and benches alike (worker/engine/environment.py).
_cpuinfo_model = cpu_model


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return None


def _git_head() -> str:
    """The commit checked out (read-only; the tree may hold uncommitted changes: see code_hash)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_hash() -> str:
    """sha256 over the engine's and the spec's source, so a result names the code it measured."""
    h = hashlib.sha256()
    files = sorted((ROOT / "worker" / "engine").rglob("*.py")) + [ROOT / "server" / "spec.py"]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def describe(device: torch.device) -> dict[str, object]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpuinfo_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "ram_gib": round(_ram_gib() or 0.0, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "git_head": _git_head(),
        "engine_code_sha256": code_hash(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        info["cuda"] = torch.version.cuda
        info["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def cpu_pressure_us() -> int | None:
    """Linux PSI: total microseconds some task waited for a CPU (None where unsupported).

    Over a benchmark, its growth / wall time is the share of time the run competed for CPU
    with other work: a contention gauge stated with the results (ratios are interleaved to
    survive it, but a high share means noisier numbers).
    """
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def publish(report: str, out: Path | None, header: str | None = None) -> int:
    """Print a report (out None: a quick run), or append it to `out` (a new file starts with
    `header`). Returns the exit status of a benchmark's main."""
    if out is None:
        print("\n" + report)
        return 0
    if header is not None and not out.exists():
        out.write_text(header)
    with out.open("a") as f:
        f.write("\n" + report)
    print(f"appended to {out}")
    return 0
