"""docs/reproduction-kernels.md (scripts/kernel_sensitivity.py): the page is what the script
makes of its own JSON, it retrained the check experiment the reproduction page names, the
branch the reproduction's runs are pinned to gave the page's bits here and on the other CPU
model it was compared with, and a fresh run of that row gives them again on any x86-64 CPU
with AVX2 or AVX512."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reproduction-kernels.md"
RESULTS = ROOT / "docs" / "reproduction" / "results.json"


@pytest.fixture(scope="module")
def report() -> dict:
    m = re.search(r"```json\n(.*?)\n```", PAGE.read_text(), re.S)
    assert m, f"{PAGE} has no raw results block"
    return json.loads(m.group(1))


def test_the_page_is_what_the_script_makes_of_its_report(report):
    ks = load_script("kernel_sensitivity")
    assert PAGE.read_text() == ks.markdown(report)
    assert [v["name"] for v in report["variants"]] == [n for n, _ in ks.VARIANTS]
    check = json.loads(RESULTS.read_text())["check"]
    assert report["check"] == {k: check[k] for k in ("experiment", "seed", "figures")}
    default = report["variants"][0]
    assert default["vs_default"] == 0.0 and default["values"]  # the reference row itself


def test_the_pinned_branch_gave_the_same_bits_as_the_page_and_on_the_other_cpu(report):
    """docs/reproduction.md's runs train on oneMKL's COMPATIBLE branch (scripts/_mkl_pin.py)
    because this page measured it giving the same bits on two CPU models."""
    pin = load_script("_mkl_pin").BRANCH
    row = next(v for v in report["variants"] if v["name"] == f"MKL_CBWR={pin}")
    assert row["vs_page"] == 0.0 and not row["flips"]
    assert report["other"]["cpu"] != report["machine"]["cpu"], "compare two CPU models"
    assert row["vs_other"] == 0.0
    ks = load_script("kernel_sensitivity")
    assert row["vs_other"] == ks.worst_rel(row["values"], report["other"]["values"][row["name"]])


def test_a_fresh_run_of_the_pinned_row_gives_its_numbers(report):
    import torch

    from worker.engine.environment import environment

    here = environment("cpu")
    if here["mkl_cbwr"] is None or here["isa"] not in load_script("_mkl_pin").SAME_BITS_ISAS:
        pytest.skip(f"oneMKL {here['mkl_cbwr']}, ATen {here['isa']}: the COMPATIBLE branch's "
                    "bits were measured only with oneMKL and AVX2 or AVX512 ATen kernels")
    assert torch.backends.mkl.is_available()
    ks = load_script("kernel_sensitivity")
    row = next(v for v in report["variants"] if v["name"] == "MKL_CBWR=COMPATIBLE")
    got = ks.run_variant(RESULTS, row["name"])
    assert got["verdicts"] == row["verdicts"]
    for key, want in row["values"].items():  # the same branch, one thread: the same bits
        assert math.isclose(got["values"][key], want, rel_tol=1e-12), (key, got, want)
