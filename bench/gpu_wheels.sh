#!/usr/bin/env bash
# The Python packages bench/bench_gpu.py needs that a lent GPU machine's image lacks (it has
# torch, numpy, scipy, scikit-learn, matplotlib, requests, tqdm, httpx; no network), as wheels
# for its Python 3.12 in ./.whl, at the versions this project's environment runs. The device
# call carries .whl and installs them first (bench/README.md, "GPU checks").
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
pkgs=(pydantic pydantic-core pydantic-settings annotated-types typing-inspection python-dotenv
      typing-extensions mnist1d)
pins=$("$py" - "${pkgs[@]}" <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
# shellcheck disable=SC2086  # one word per pin
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl $pins 2> >(grep -v "is ignored" >&2)
ls .whl
