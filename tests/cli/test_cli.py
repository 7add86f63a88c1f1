"""The `landscope` command: usage errors exit 2 with a message naming the key; runs write files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from landscope.cli import main

TINY = ["--set", "steps=12", "--set", "probes.landscape.every=4", "--quiet"]


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--set", "lerning_rate=0.1"], "lerning_rate: unknown key; the run spec has:"),
        (["--set", "probes.landscap.every=2"], "probes has: activations"),
        (["--set", "lr=-1"], "lr: Input should be greater than 0"),
        (["--set", "norm=batchnorm"], "norm: Input should be 'none', 'batch'"),
        (["--set", "lr"], "--set: expected KEY=VALUE"),
        (["--preset", "nope"], "unknown preset 'nope'; known: paper-vgg16"),
        (["--set", "model=vgg", "--set", "dataset=mnist1d"], "needs image data"),
    ],
)
def test_bad_input_exits_2_naming_the_key(capsys, tmp_path, argv, needle):
    code, _, err = run_cli(capsys, "train", *argv, "--out", str(tmp_path))
    assert code == 2
    assert needle in err
    assert not any(tmp_path.iterdir())  # nothing started


def test_argparse_usage_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--max-steps", "many"])
    assert exc.value.code == 2


def test_presets_lists_every_preset_and_prints_full_specs(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    for name in ("paper-vgg16", "paper-dln", "quick-vgg", "quick-mlp", "quick-dln"):
        assert name in out
    # Figures of the paper read "Fig 1, 3a, 4"; another paper's name their own: "Fig" once.
    assert "[Fig 1, 3a, 4]" in out and "[Li et al. 2018, Fig 5]" in out
    assert "Fig Li" not in out
    code, out, _ = run_cli(capsys, "presets", "paper-dln")
    doc = json.loads(out)
    assert [r["norm"] for r in doc["runs"]] == ["none", "batch"]
    assert doc["runs"][0]["lr"] == 1e-6 and doc["runs"][0]["depth"] == 25


def test_train_writes_every_run_of_the_experiment(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "--preset", "quick-dln", *TINY, "--out", str(tmp_path))
    assert code == 0
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["dln25x10-batch-lr1e-06-s0", "dln25x10-none-lr1e-06-s0"]
    for name in runs:
        record = json.loads((tmp_path / name / "run.json").read_text())
        assert record["status"] == "succeeded"
        rows = read_csv(tmp_path / name / "scalars.csv")
        assert [int(r["step"]) for r in rows if r["key"] == "train/loss"] == list(range(12))
        eta_rows = read_csv(tmp_path / name / "landscape.csv")
        assert {int(r["step"]) for r in eta_rows} == {0, 4, 8}
        assert len(eta_rows) == 3 * 5  # five step sizes per probe
    assert "dln25x10-batch-lr1e-06-s0" in out  # the closing summary


def test_vary_on_the_command_line(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "train", "--preset", "quick-dln", *TINY,
                         "--vary", "norm=none,l1", "--out", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dln25x10-l1-lr1e-06-s0", "dln25x10-none-lr1e-06-s0"]


def test_set_on_a_varied_key_fixes_it(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "train", "--preset", "quick-dln", *TINY, "--set", "norm=l2",
                         "--out", str(tmp_path))
    assert code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["dln25x10-l2-lr1e-06-s0"]


def test_resume_continues_to_the_same_files(capsys, tmp_path):
    common = ["train", "--set", "model=mlp", "--set", "dataset=digits", "--set", "steps=10",
              "--set", "checkpoint_every=4", "--set", "probes.landscape.every=3", "--quiet"]
    assert run_cli(capsys, *common, "--out", str(tmp_path / "whole"))[0] == 0
    assert run_cli(capsys, *common, "--max-steps", "6", "--out", str(tmp_path / "cut"))[0] == 0
    assert run_cli(capsys, *common, "--resume", "--out", str(tmp_path / "cut"))[0] == 0
    (whole,) = (tmp_path / "whole").iterdir()
    (cut,) = (tmp_path / "cut").iterdir()
    for name in ("landscape.csv", "distributions.jsonl"):
        assert (whole / name).read_text() == (cut / name).read_text(), name

    def without_timings(path):
        return [ln for ln in path.read_text().splitlines()
                if "probe_time/" not in ln and "time/wall_s" not in ln]

    assert without_timings(whole / "scalars.csv") == without_timings(cut / "scalars.csv")


def test_missing_cifar_archive_names_the_file_and_the_command(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--set", "model=vgg", "--set", "dataset=cifar10",
                           "--set", "width=0.125", "--vary", "norm=batch",
                           "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o"))
    assert code == 1
    assert str(tmp_path / "data" / "cifar-10-python.tar.gz") in err
    assert "landscope data download cifar10" in err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "landscope.cli", "presets"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "paper-vgg16" in proc.stdout
