"""`landscope train` and scripts/reproduce_figures.py follow the one thread policy (the spec's
`threads`, else LANDSCOPE_TORCH_THREADS, else 1) and record what they used in run.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from landscope.cli import main
from server.settings import get_settings
from server.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "model=mlp", "--set", "dataset=digits", "--set", "depth=2",
        "--set", "width=8", "--set", "steps=3", "--set", "eval_every=0", "--quiet"]


@pytest.fixture
def torch_threads_setting(monkeypatch):
    """Set LANDSCOPE_TORCH_THREADS (None: unset) for the settings the launchers read."""

    def set_(value: int | None) -> None:
        if value is None:
            monkeypatch.delenv("LANDSCOPE_TORCH_THREADS", raising=False)
        else:
            monkeypatch.setenv("LANDSCOPE_TORCH_THREADS", str(value))
        get_settings.cache_clear()

    yield set_
    monkeypatch.delenv("LANDSCOPE_TORCH_THREADS", raising=False)
    get_settings.cache_clear()


def environment_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["info"]["environment"]


@pytest.mark.parametrize(("spec_threads", "setting", "used"),
                         [(None, None, 1), (None, 2, 2), (3, 2, 3)])
def test_landscope_train_records_the_threads_of_the_policy(
    capsys, tmp_path, torch_threads_setting, spec_threads, setting, used
):
    torch_threads_setting(setting)
    extra = [] if spec_threads is None else ["--set", f"threads={spec_threads}"]
    before = torch.get_num_threads()
    assert main(["train", *TINY, *extra, "--out", str(tmp_path), "--data-dir",
                 str(tmp_path)]) == 0
    capsys.readouterr()
    assert torch.get_num_threads() == before
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "run.json").exists()]
    env = environment_of(run_dir)
    assert env["torch_threads"] == used and env["dtype"] == "float32"
    assert env["isa"] == torch.backends.cpu.get_cpu_capability()


def _reproduce_script():
    spec = importlib.util.spec_from_file_location(
        "reproduce_figures", ROOT / "scripts" / "reproduce_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("spec_threads", "flag", "setting", "used"),
                         [(None, None, None, 1), (None, None, 2, 2), (None, 3, 2, 3),
                          (2, 3, None, 2)])
def test_the_reproduction_script_records_the_threads_of_the_policy(
    tmp_path, torch_threads_setting, spec_threads, flag, setting, used
):
    torch_threads_setting(setting)
    spec = RunSpec.model_validate({"model": "mlp", "dataset": "digits", "depth": 2, "width": 8,
                                   "steps": 3, "eval_every": 0, "device": "cpu",
                                   "threads": spec_threads, "dtype": "float64"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before = torch.get_num_threads()
    record = _reproduce_script().train_one(spec.model_dump_json(), str(run_dir), str(tmp_path),
                                           flag)
    assert record["status"] == "succeeded" and torch.get_num_threads() == before
    env = environment_of(run_dir)
    assert env["torch_threads"] == used and env["dtype"] == "float64"
