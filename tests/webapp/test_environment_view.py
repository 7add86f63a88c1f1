"""The environment block under a run's chip (compare view and experiment page): a summary
line of what the run's numbers depend on, every recorded field on opening it; nothing for a
run that has none recorded."""

from __future__ import annotations

from dash import html

from server.spec import RunSpec
from tests.webapp.layout_walk import texts
from webapp.compare.layout import run_strip
from webapp.environment_view import environment_block, summary
from webapp.runsets import build_views

ENV = {"torch_threads": 1, "interop_threads": 2, "deterministic": False,
       "cudnn": {"enabled": True, "deterministic": False, "benchmark": False,
                 "allow_tf32": True},
       "dtype": "float64", "device": "cpu", "device_name": "AMD EPYC", "cpu": "AMD EPYC",
       "isa": "AVX512", "mkl_cbwr": "COMPATIBLE", "os": "Linux", "versions": {"python": "3.11.7",
                                                   "torch": "2.13.0+cpu", "numpy": "2.4.6",
                                                   "landscope": "0.1.0"}}


def test_the_summary_names_threads_precision_machine_and_torch():
    assert summary(ENV) == "1 thread · float64 · AMD EPYC (AVX512) · torch 2.13.0+cpu"
    gpu = {**ENV, "torch_threads": 4, "dtype": "float32", "device": "cuda:0",
           "device_name": "NVIDIA H200", "deterministic": True}
    assert summary(gpu) == ("4 threads · float32 · deterministic · NVIDIA H200 · "
                            "torch 2.13.0+cpu")
    assert summary({"cpu": "x", "versions": {}}) == ""  # a torch-free SDK process: no claims


def test_the_block_lists_every_recorded_field():
    block = environment_block({"environment": ENV})
    assert isinstance(block, html.Details)
    words = texts(block)
    for expected in ("torch threads", "1", "inter-op threads", "2", "instruction set",
                     "AVX512", "oneMKL branch", "COMPATIBLE", "precision", "float64",
                     "deterministic algorithms", "off",
                     "python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, landscope 0.1.0",
                     "enabled on, deterministic off, benchmark off, allow_tf32 on"):
        assert expected in words, expected
    assert environment_block({"environment": None}) is None
    assert environment_block({}) is None


def test_a_runs_chip_carries_its_environment():
    spec = RunSpec().model_dump(mode="json")
    runs = [{"id": i, "name": f"r{i}", "spec": spec, "status": "succeeded", "step": 10,
             "total": 10, "progress": 1.0, "source": "service", "device": "cpu",
             "worker": "w", "diverged_at": None, "environment": env}
            for i, env in ((1, ENV), (2, None))]
    chips = run_strip(runs, build_views(runs), lambda i: f"/export/{i}")
    with_env, without = chips
    assert any(isinstance(c, html.Details) for c in with_env.children)
    assert "1 thread · float64 · AMD EPYC (AVX512) · torch 2.13.0+cpu" in texts(with_env)
    assert not any(isinstance(c, html.Details) for c in without.children)


def test_a_reproduction_figure_says_what_its_runs_trained_under():
    from webapp.environment_view import environments_line

    same = environments_line([{"environment": ENV}, {"environment": ENV}, {}])
    assert texts(same) == ["Environment: ",
                           "1 thread · float64 · AMD EPYC (AVX512) · torch 2.13.0+cpu (2 runs)"]
    two = environments_line([{"environment": ENV}, {"environment": {**ENV, "torch_threads": 2}}])
    assert texts(two)[0] == "Environments differ: "
    assert "1 thread" in texts(two)[1] and "2 threads" in texts(two)[1]
    assert environments_line([{"environment": None}]) is None


def test_a_landscape_section_says_what_its_analyses_were_computed_in():
    from webapp.environment_view import analyses_environment_line

    det = {**ENV, "deterministic": True}
    # two analyses: one step each, the second's chunks also on a 2-thread worker
    details = [{"steps": {"30": {"environments": [det]}}},
               {"steps": {"30": {"environments": [det, {**det, "torch_threads": 2}]},
                          "0": {"environments": [det]}}}]
    line = texts(analyses_environment_line(details))
    assert line[0] == "Computed in several environments: "
    assert line[1] == ("1 thread · float64 · deterministic · AMD EPYC (AVX512) · torch "
                       "2.13.0+cpu (2 analyses); 2 threads · float64 · deterministic · AMD "
                       "EPYC (AVX512) · torch 2.13.0+cpu (1 analysis)")
    one = texts(analyses_environment_line(details[:1]))
    assert one[0] == "Computed in: " and one[1].endswith("(1 analysis)")
    # analyses stored before environments were recorded: nothing to say
    assert analyses_environment_line([{"steps": {"30": {"values": {}}}}, {}]) is None
