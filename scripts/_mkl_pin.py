"""Pin oneMKL's code branch for the reproduction's runs, so that they come back bit for bit on
another x86-64 CPU.

oneMKL picks a code branch per CPU unless MKL_CBWR pins one, and Intel and AMD CPUs get
different ones: the float64 deep linear net's numbers moved by 3e-5 between an Intel Xeon and
an AMD EPYC. Pinned to COMPATIBLE, the same runs gave identical bits on both
(docs/reproduction-kernels.md, made by scripts/kernel_sensitivity.py, which also times each
branch). The branch each run trained on is recorded with it (environment's `mkl_cbwr`), and
tests/docs/test_reproduction_doc.py retrains under the page's.

oneMKL reads MKL_CBWR once, when it first runs, and importing the catalogue already imports
torch: the pin takes a fresh process, so `pin()` re-runs the command with it set. Call it only
from a script's `if __name__ == "__main__":` block (it re-runs sys.argv). A caller's own
MKL_CBWR wins.
"""

from __future__ import annotations

import os
import sys

BRANCH = "COMPATIBLE"
# ATen's kernels measured to give the same bits with it (its scalar ones moved the DLN's
# numbers by 1e-3: docs/reproduction-kernels.md): where a retrain can expect the page's bits.
SAME_BITS_ISAS = ("AVX2", "AVX512")


def pin() -> None:
    """Re-run this command (sys.argv) with MKL_CBWR=BRANCH unless MKL_CBWR is set."""
    if "MKL_CBWR" in os.environ:
        return
    env = {**os.environ, "MKL_CBWR": BRANCH}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
