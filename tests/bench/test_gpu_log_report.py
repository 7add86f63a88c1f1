"""bench/gpu_log_report.py renders a killed bench_gpu run's section from its log: whole lines
as they are, lines cut at 400 characters (older logs) by their top-level scalars."""

from __future__ import annotations

import json

from bench.gpu_log_report import main, read_log, salvage

MACHINE = {"date": "d", "cpu": "c", "cpu_count": 16, "ram_gib": 128, "gpu": "H200",
           "cuda": "13.0", "cudnn_tf32": True, "matmul_tf32": False, "device": "cuda",
           "python": "3.12", "torch": "2.11", "torch_threads": 4, "git_head": "x",
           "engine_code_sha256": "y", "loadavg_at_start": "0"}
SURFACE = {"step": 300, "points": 2601, "written": 2601, "eval_samples": 2048,
           "eval_batch": 128, "vmap": True, "group": 64, "fallback": None, "setup_s": 5.0,
           "prepare_s": 1.0, "grid_s": 59.5, "points_per_s": 43.7, "loss_min": 0.0005,
           "loss_max": 1.9, "nonfinite": 0, "centre_loss": 0.0005, "section_s": 65.5}


def _log(tmp_path):
    whole = json.dumps({**SURFACE, "grid_s": 30.0})
    cut = json.dumps(SURFACE)[:-20]  # cut inside its last field
    train = json.dumps({"command": "landscope train", "runs": {"a": {"status": "x"}}})[:30]
    text = "\n".join([json.dumps(MACHINE), "[archive] FAILED: OSError: disk",
                      f"[train_fp32] done in 3.0 s: {train}",
                      f"[surface_batch] done in 65.5 s: {cut}",
                      f"[surface_none] done in 31.0 s: {whole}", "a warning line"])
    path = tmp_path / "log"
    path.write_text(text)
    return path


def test_salvage_keeps_top_level_scalars_and_skips_nested_ones():
    text = '{"a": 1.5e-3, "n": null, "s": "x, y", "d": {"a": 9, "b": [1, 2]}, "t": true, "cut": 12'
    assert salvage(text) == {"partial": True, "a": 1.5e-3, "n": None, "s": "x, y", "t": True}


def test_a_log_gives_machine_whole_and_cut_sections(tmp_path):
    machine, res = read_log(_log(tmp_path).read_text())
    assert machine == MACHINE
    assert res["surface_none"]["grid_s"] == 30.0 and "partial" not in res["surface_none"]
    cut = res["surface_batch"]
    assert cut["partial"] and cut["grid_s"] == 59.5 and cut["group"] == 64
    assert "centre_loss" not in cut or cut["centre_loss"] == 0.0005
    assert res["archive"] == {"error": "OSError: disk"}


def test_the_report_renders_what_the_log_holds(tmp_path, capsys):
    extra = tmp_path / "mlp.json"
    extra.write_text(json.dumps({"norms": {"batch": {
        "vmap_over_loop": {"median": 0.14, "min": 0.11, "max": 0.16}, "points": 441,
        "group": 64, "surface_s": {"surface, loop": 0.28, "surface, vmap 64 (default)": 0.04}}}}))
    assert main([str(_log(tmp_path)), "--section", f"grid_paths_mlp={extra}",
                 "--note", "killed at its limit"]) == 0
    out = capsys.readouterr().out
    assert "- note: killed at its limit" in out
    assert "| none | 30.00 |" in out and "| batch | 59.50 |" in out
    batch_row = next(line for line in out.splitlines() if line.startswith("| batch | 59.50"))
    assert batch_row.rstrip(" |").endswith("**MISSED**")  # 1.0 s prepare + 59.5 s grid
    assert "skipped: its log line was cut short" in out
    assert "| MLP 6x128, norm batch, 2048 samples, 441 points, vmap 64 | 7.14" in out
