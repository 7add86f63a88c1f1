"""A tiny plug-in distribution (landscope-testplug), really built and installed with pip into a
directory of its own, for tests of worker/engine/plugins.py, the server's checks and a worker.

It provides, under the entry-point groups the engine reads:
- model "testplug.tiny_net": Linear -> BatchNorm1d -> ReLU -> Linear -> ReLU -> Linear; its
  second hidden layer has no norm, and model_options {"hidden": H} sets the width;
- model "testplug.broken": a factory that raises;
- model "mlp": shadows a built-in, so workers must ignore (and report) it;
- dataset "testplug.blobs": Gaussian blobs (classification), sizes from dataset_options.
Nothing is downloaded: pip builds it from source with the setuptools already installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

DIST = "landscope-testplug"
VERSION = "0.1.0"
MODULE = "landscope_testplug"

PYPROJECT = f"""
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "{VERSION}"

[tool.setuptools]
packages = ["{MODULE}"]

[project.entry-points."landscope.models"]
"testplug.tiny_net" = "{MODULE}.nets:tiny_net"
"testplug.broken" = "{MODULE}.nets:broken"
"mlp" = "{MODULE}.nets:tiny_net"

[project.entry-points."landscope.datasets"]
"testplug.blobs" = "{MODULE}.data:blobs"
"""

NETS = '''
"""Test plug-in models."""
import torch
from torch import nn

IMPORTED = True


def tiny_net(spec, in_shape, n_outputs):
    hidden = int(spec.model_options.get("hidden", 16))
    d = 1
    for s in in_shape:
        d *= s
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        # Dropout draws from torch's global generator: probes must rewind and restore it.
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(hidden, n_outputs),
    )


def broken(spec, in_shape, n_outputs):
    raise RuntimeError("this plug-in is broken on purpose")
'''

DATA = '''
"""Test plug-in dataset: Gaussian blobs, one per class."""
import torch

from worker.engine.data import Dataset


def blobs(spec, data_dir):
    opts = spec.dataset_options
    n, dim, k = int(opts.get("n", 256)), int(opts.get("dim", 6)), int(opts.get("classes", 3))
    g = torch.Generator().manual_seed(spec.seed + 12345)
    centres = 3 * torch.randn(k, dim, generator=g)

    def sample(rows):
        y = torch.randint(k, (rows,), generator=g)
        return centres[y] + torch.randn(rows, dim, generator=g), y

    x_train, y_train = sample(n)
    x_test, y_test = sample(n // 4)
    return Dataset(name="testplug.blobs", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, task="classification", n_outputs=k, in_shape=(dim,),
                   info={"centres_seed": spec.seed + 12345})
'''


def write_source(root: Path) -> Path:
    src = root / "src"
    pkg = src / MODULE
    pkg.mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (pkg / "__init__.py").write_text('"""landscope-testplug: a test plug-in."""\n')
    (pkg / "nets.py").write_text(NETS)
    (pkg / "data.py").write_text(DATA)
    return src


def install(root: Path) -> Path:
    """Build and install the distribution into root/site (returned: put it on sys.path or
    PYTHONPATH). Offline: no index, no build isolation, no dependencies."""
    src = write_source(root)
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
        check=True, cwd=root, capture_output=True, text=True, timeout=300,
    )
    return site
