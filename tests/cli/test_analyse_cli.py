"""`landscope train` saves snapshots; `landscope analyse` measures them, here or on a server."""

from __future__ import annotations

import csv
import json
import struct

import pytest
import torch

from landscope.cli import _parser, analyse_cmd, main
from server.analysis_spec import AnalysisSpec
from server.spec import RunSpec, SpecError
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.snapshots import DirectorySnapshotStore

TRAIN = ["--set", "model=mlp", "--set", "depth=3", "--set", "width=8", "--set",
         "dataset=digits", "--set", "steps=10", "--set", "eval_every=0", "--set",
         "snapshots.every=5", "--quiet"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", *TRAIN, "--out", str(out)]) == 0
    (path,) = [p for p in out.iterdir() if p.is_dir()]
    return path


def rows(path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_train_saves_snapshots_in_the_run_folder_unless_told_not_to(run_dir, tmp_path, capsys):
    assert DirectorySnapshotStore(run_dir / "snapshots").steps() == [0, 5, 10]
    out = tmp_path / "again"
    assert main(["train", *TRAIN, "--out", str(out)]) == 0
    folder = next(p for p in out.iterdir() if p.is_dir())
    stale = folder / "snapshots" / "snap-00000007.pt"
    stale.write_bytes(b"another run's")
    assert main(["train", *TRAIN, "--out", str(out), "--no-snapshots"]) == 0
    assert not list((folder / "snapshots").glob("*.pt"))  # a fresh run keeps no old snapshot


def test_a_surface_writes_analysis_json_and_points_csv(run_dir, tmp_path, capsys):
    out = tmp_path / "surface"
    code, stdout, err = run_cli(capsys, "analyse", str(run_dir), "--kind", "surface",
                                "--points", "5", "--eval-samples", "100", "--steps", "5,10",
                                "--out", str(out))
    assert code == 0, err
    assert "100%" in err and "pt" in err  # the progress bar
    assert "step 10: loss" in stdout
    doc = json.loads((out / "analysis.json").read_text())
    spec = AnalysisSpec.model_validate(doc["spec"])
    assert (spec.kind, spec.x.points, spec.y.points, spec.steps) == ("surface", 5, 5, [5, 10])
    assert doc["analysed_steps"] == [5, 10]
    assert doc["grid"]["x"] == spec.x_axis().values()
    meta = doc["steps"]["10"]["values"]["meta"]
    assert (meta["bn_mode"], meta["eval_samples"]) == ("batch", 100)
    # what it was computed in, apart from the values, as the API gives it
    (env,) = doc["steps"]["10"]["environments"]
    assert env["torch_threads"] == meta["threads"] and env["device"] == "cpu"
    assert not any(k.startswith("environment:") for k in doc["steps"]["10"]["values"])
    assert doc["steps"]["10"]["values"]["directions"]["labels"] == ["d1", "d2"]
    table = rows(out / "points.csv")
    assert len(table) == 50
    # the same numbers as the engine's own job, in-process (exact: repr round-trips)
    run_spec = RunSpec.model_validate(json.loads((run_dir / "run.json").read_text())["spec"])
    job = AnalysisJob(run_spec, spec, run_dir, DirectorySnapshotStore(run_dir / "snapshots"),
                      "cpu")
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    got = [float(r["loss"]) for r in table if r["step"] == "10"]
    assert [struct.pack("<d", x) for x in got] == \
           [struct.pack("<d", x) for x in sink.losses(10)]
    first = table[0]
    assert (first["ix"], first["iy"], float(first["x"]), float(first["y"])) == \
           ("0", "0", -1.0, -1.0)
    assert first["test_loss"] == ""


def test_a_spectrum_and_an_interpolation(run_dir, tmp_path, capsys):
    out = tmp_path / "spectrum"
    code, stdout, err = run_cli(
        capsys, "analyse", str(run_dir), "--kind", "spectrum", "--eval-samples", "64",
        "--set", "spectrum.top_k=2", "--set", "spectrum.lanczos_steps=10",
        "--set", "spectrum.trace_probes=3", "--set", "spectrum.slq_steps=5",
        "--set", "spectrum.slq_vectors=1", "--quiet", "--out", str(out))
    assert code == 0, err
    values = json.loads((out / "analysis.json").read_text())["steps"]["10"]["values"]
    assert len(values["spectrum"]["top_eigenvalues"]) == 2
    assert "top eigenvalues" in stdout
    assert rows(out / "points.csv") == []

    out = tmp_path / "interp"
    code, stdout, err = run_cli(capsys, "analyse", str(run_dir), "--kind", "slice",
                                "--directions", "interpolation", "--points", "5",
                                "--eval-samples", "64", "--quiet", "--out", str(out))
    assert code == 0, err
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["grid"]["x"] == [-0.5, 0.0, 0.5, 1.0, 1.5]
    values = doc["steps"]["10"]["values"]
    assert values["endpoints"]["a"]["step"] == 0 and values["endpoints"]["b"]["step"] == 10
    assert isinstance(values["barrier"], float)


@pytest.mark.parametrize("argv,needle", [
    (["--points", "0"], "x.points: Input should be greater than or equal to 1"),
    (["--steps", "3"], "no snapshot of step 3 in this run; saved steps: [0, 5, 10]"),
    (["--steps", "a,b"], "--steps: expected steps like 0,500"),
    (["--directions", "gradient"], "'gradient' does not apply to a surface"),
    (["--set", "spectrum.topk=3"], "spectrum.topk: Extra inputs are not permitted"),
    (["--set", "bn_mode"], "--set: expected KEY=VALUE"),
    (["--eval-samples", "many"], "--eval-samples: expected a number or 'all'"),
    (["--run", "3"], "--run: needs --server URL"),
    (["--kind", "trajectory", "--steps", "0"], "pca needs at least 2 snapshots"),
])
def test_bad_arguments_exit_2_with_a_message(run_dir, tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    code, _, err = run_cli(capsys, "analyse", str(run_dir), *argv, "--quiet",
                           "--out", str(out))
    assert code == 2
    assert needle in err


def test_a_folder_that_is_no_run_is_named(tmp_path, capsys):
    code, _, err = run_cli(capsys, "analyse", str(tmp_path / "nope"))
    assert code == 2 and "is not a folder" in err
    code, _, err = run_cli(capsys, "analyse", str(tmp_path))
    assert code == 2 and "no run.json and no snapshots" in err
    code, _, err = run_cli(capsys, "analyse")
    assert code == 2 and "RUN_DIR: give a `landscope train` run folder" in err
    with pytest.raises(SystemExit) as exc:
        main(["analyse", str(tmp_path), "--kind", "volume"])
    assert exc.value.code == 2


# -- against a server ------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """The API on SQLite with the embedded broker, and a run with snapshots 0, 5, 10."""
    from fastapi.testclient import TestClient

    from server.api.app import create_app
    from server.db.migrate import upgrade
    from server.db.models import Run, Snapshot
    from server.db.session import make_engine, make_sessionmaker
    from server.settings import Settings

    url = f"sqlite:///{tmp_path / 'landscope.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=url,
                        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    spec = RunSpec.model_validate({"model": "mlp", "depth": 3, "width": 8, "dataset": "digits",
                                   "steps": 10, "snapshots": {"every": 5}, "device": "cpu"})
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as s:
        run = Run(name="r", spec=spec.model_dump(mode="json"), queue="landscope.cpu",
                  total=10, status="succeeded", step=10)
        s.add(run)
        s.flush()
        run_id = run.id
        s.add_all(Snapshot(run_id=run_id, step=k, path=f"/snap/{k}.pt", bytes=1)
                  for k in (0, 5, 10))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        yield client, run_id


def server_args(*argv: str):
    return _parser().parse_args(["analyse", "--server", "http://testserver", *argv])


def test_against_a_server_a_dry_run_prints_the_cost_and_a_post_queues(server, capsys):
    client, run_id = server
    args = server_args("--run", str(run_id), "--kind", "surface", "--points", "5", "--dry-run")
    assert analyse_cmd.run(args, http=client) == 0
    out = capsys.readouterr().out
    cost = json.loads(out.split("cost: ", 1)[1].splitlines()[0])
    assert cost["points"] == 25
    assert client.get("/api/v1/analyses", params={"run_id": run_id}).json()["items"] == []

    args = server_args("--run", str(run_id), "--kind", "slice", "--steps", "5,10")
    assert analyse_cmd.run(args, http=client) == 0
    assert "queued on http://testserver" in capsys.readouterr().out
    (made,) = client.get("/api/v1/analyses", params={"run_id": run_id}).json()["items"]
    assert (made["kind"], made["spec"]["steps"]) == ("slice", [5, 10])


def test_against_a_server_its_refusals_are_shown(server, capsys):
    client, run_id = server
    args = server_args("--run", str(run_id), "--steps", "7")
    assert analyse_cmd.run(args, http=client) == 1
    assert "saves no snapshot at step(s) 7" in capsys.readouterr().err
    with pytest.raises(SpecError, match="--run: with --server give --run ID"):
        analyse_cmd.run(server_args(), http=client)


def test_following_an_analysis_on_a_server_ends_at_its_final_status(server, tmp_path):
    from landscope.cli.reproduce_cmd import Api

    client, run_id = server
    assert analyse_cmd.run(server_args("--run", str(run_id), "--kind", "slice"),
                           http=client) == 0
    (made,) = client.get("/api/v1/analyses", params={"run_id": run_id}).json()["items"]
    assert client.post(f"/api/v1/analyses/{made['id']}/cancel").status_code < 300
    api = Api("http://testserver", None, client)
    detail = analyse_cmd._follow(api, made["id"], True)
    assert detail["status"] == "cancelled" and detail["progress"]["total"] == 41
    analyse_cmd.save_details(api, [detail], tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / f"analysis-{made['id']}.json").read_text()) == detail
    assert (tmp_path / "saved" / f"analysis-{made['id']}.csv").read_text().splitlines()[0].endswith(
        "step,idx,ix,iy,x,y,loss,acc,test_loss,test_acc")


def test_snapshot_loading_never_unpickles_code(run_dir):
    state = DirectorySnapshotStore(run_dir / "snapshots").load(5)
    assert set(state) == {"format", "step", "spec", "model"}
    assert all(isinstance(v, torch.Tensor) for v in state["model"].values())
