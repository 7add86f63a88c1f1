"""docs/reproduction-kernels.md (scripts/kernel_sensitivity.py): the page is what the script
makes of its own JSON, it retrained the check experiment the reproduction page names, and a
fresh run of one of its rows gives that row's numbers on the CPU model it was made on."""

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


def test_a_fresh_row_gives_the_page_s_numbers_on_the_cpu_it_was_made_on(report):
    from worker.engine.environment import cpu_model

    if cpu_model() != report["machine"]["cpu"]:
        pytest.skip(f"the page was made on {report['machine']['cpu']!r}, this is "
                    f"{cpu_model()!r}: oneMKL's default branch differs between CPU models")
    ks = load_script("kernel_sensitivity")
    row = next(v for v in report["variants"] if v["name"] == "MKL_CBWR=COMPATIBLE")
    got = ks.run_variant(RESULTS, row["name"])
    assert got["verdicts"] == row["verdicts"]
    for key, want in row["values"].items():  # the same branch, one thread: the same bits
        assert math.isclose(got["values"][key], want, rel_tol=1e-12), (key, got, want)
