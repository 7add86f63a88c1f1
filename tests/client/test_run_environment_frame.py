"""The notebook client's runs frame spreads a run's environment into dotted columns, so runs
can be grouped by thread count, precision or torch version."""

from __future__ import annotations

from landscope.client.frames import run_record

RUN = {"id": 3, "name": "r", "spec": {"lr": 0.1}, "config": None, "last_loss": "NaN",
       "environment": {"torch_threads": 2, "dtype": "float64",
                       "versions": {"torch": "2.13.0+cpu"}}}


def test_flat_rows_carry_the_environment_as_columns():
    row = run_record(RUN, flat=True)
    assert row["environment.torch_threads"] == 2 and row["environment.dtype"] == "float64"
    assert row["environment.versions.torch"] == "2.13.0+cpu" and "environment" not in row
    assert run_record(RUN, flat=False)["environment"] == RUN["environment"]
    assert not any(k.startswith("environment") for k in
                   run_record({**RUN, "environment": None}, flat=True))
