"""What changes a run's numbers besides its spec and seeds, recorded with every run.

The same spec and seed give the same numbers bit for bit only on the same kind of machine with
the same settings: float32 sums are added in another order with another thread count (torch
splits a reduction across its intra-op threads) or another instruction set (AVX2 and AVX512
kernels block differently), and deterministic algorithms, cuDNN autotuning and TF32 change
which kernel runs. So every run says what it ran under: this dict goes to run.json (`landscope
train --out`), run.info["environment"] in the database (RunOut.environment), the run export and
the dashboard's run page; SDK runs record their own process's at landscope.init.

Pure torch and the standard library: no HTTP, no settings. `environment()` does not import
torch when the caller has not (the SDK's init must not pay for it): the torch fields are then
None.
"""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "numpy", "landscope")


def environment(device: Any = "cpu", dtype: Any = None) -> dict[str, Any]:
    """The settings and machine a run's numbers depend on, as a JSON-able dict.

    `device`: the device the run trains on; `dtype`: its floating-point precision (a torch
    dtype or its name; None: torch's default dtype). Threads and determinism flags are read
    now: call it where the run trains, with its thread count in force."""
    torch = sys.modules.get("torch")
    env: dict[str, Any] = {
        "torch_threads": None, "interop_threads": None, "deterministic": None,
        "deterministic_warn_only": None, "cudnn": None, "matmul_tf32": None,
        "float32_matmul_precision": None,
        "dtype": _dtype_name(dtype, torch),
        "device": str(device),
        "device_name": None,
        "cpu": cpu_model(),
        "isa": None,
        "mkl_cbwr": None,
        "machine": platform.machine(),
        "os": platform.platform(),
        "versions": versions(),
    }
    if torch is None:
        env["device_name"] = env["cpu"] if str(device) == "cpu" else None
        return env
    env.update(
        torch_threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn={"enabled": torch.backends.cudnn.enabled,
               "deterministic": torch.backends.cudnn.deterministic,
               "benchmark": torch.backends.cudnn.benchmark,
               "allow_tf32": torch.backends.cudnn.allow_tf32},
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        # The instruction set torch's CPU kernels dispatch to (AVX2, AVX512, ...): the same
        # model name can run other kernels under another torch build.
        isa=torch.backends.cpu.get_cpu_capability(),
        mkl_cbwr=mkl_branch(torch),
    )
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = env["cpu"] if dev.type == "cpu" else dev.type
    return env


# oneMKL's Conditional Numerical Reproducibility branches (mkl_service.h's MKL_CBWR_* values).
_CBWR_NAMES = {1: "off", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
               8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512",
               13: "AVX512_MIC_E1", 14: "AVX512_E1"}


@functools.cache
def mkl_branch(torch: Any) -> str | None:
    """The code branch oneMKL runs its float64 and float32 BLAS on, as oneMKL reports it:
    "off" (it picks one per CPU, and Intel and AMD CPUs get different ones: the float64 DLN's
    numbers moved by 3e-5 between them, docs/reproduction-kernels.md), or the branch
    MKL_CBWR pinned ("COMPATIBLE", which oneMKL documents as giving the same results on Intel
    and compatible CPUs, gave identical bits on an Intel Xeon and an AMD EPYC). None when
    torch has no oneMKL.

    oneMKL reads MKL_CBWR itself, once, when it loads; torch links oneMKL statically and
    exports only its service entry point, so this asks that (mkl_cbwr_get(MKL_CBWR_BRANCH)).
    Cached: the branch cannot change after oneMKL has loaded."""
    if not torch.backends.mkl.is_available():
        return None
    import ctypes

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        code = int(lib.mkl_serv_cbwr_get(1))
    except (OSError, AttributeError):  # another build of torch: unknown, not a crash
        return None
    return _CBWR_NAMES.get(code, f"branch {code}")


def _dtype_name(dtype: Any, torch: Any) -> str | None:
    if dtype is None:
        return None if torch is None else str(torch.get_default_dtype()).removeprefix("torch.")
    return str(dtype).removeprefix("torch.")


@functools.cache
def versions() -> dict[str, str | None]:
    """python, torch, numpy, landscope: installed distributions, None when one is missing."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    torch = sys.modules.get("torch")
    if torch is not None:  # the running one wins over whatever metadata says (e.g. +cpu)
        out["torch"] = torch.__version__
    return out


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
