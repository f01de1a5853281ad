"""The xreduce-benchmark command in its tiny mode (one detector, 2 frames, one splitting).

These tests time nothing: they check that the command runs, writes its JSON and PNG
atomically, checks every result against the Cython reference, and refuses to report the speed
of a result that disagrees.
"""
import json
import os
import subprocess
import sys

import pytest

from xreduce.cli.benchmark import main

TINY = ["--detectors", "Pilatus 1M", "--frames", "2", "--methods", "bbox", "--dims", "1d",
        "--no-progress"]


def _opencl_present() -> bool:
    from xreduce.benchmark import opencl_devices
    return bool(opencl_devices())


def test_tiny_run_writes_checked_json_and_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(TINY + ["--json", str(out_json), "--plot", str(out_png), "--resident"]) == 0
    report = json.loads(out_json.read_text())
    assert set(report["machine"]) >= {"cpu_model", "cores"}
    assert report["versions"]["xreduce"] and report["versions"]["numpy"]
    results = report["results"]
    backends = [r["backend"] for r in results]
    assert backends[0] == "cython" and results[0]["check"] == "reference"
    if _opencl_present() or os.environ.get("XREDUCE_REQUIRE_OPENCL"):
        assert len(report["devices"]) >= 1 and "opencl" in backends
    for r in results:
        assert r["error"] is None, r["error"]
        assert r["detector"] == "Pilatus 1M" and r["mpix"] == pytest.approx(1.023, abs=1e-3)
        assert r["frames_per_s"] > 0
        assert r["mpix_per_s"] == pytest.approx(r["frames_per_s"] * r["mpix"])
        if r["backend"] == "opencl":
            assert r["check"].startswith("ok") and r["max_rel_diff"] <= 1e-4
            assert r["resident_frames_per_s"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]   # no temporary left over
    table = capsys.readouterr().out
    assert "frames/s" in table and "Pilatus 1M" in table


def test_disagreeing_result_is_marked_failed(tmp_path, monkeypatch):
    """An OpenCL engine made 1 % wrong is caught: FAILED, no speed, exit status 1."""
    if not (_opencl_present() or os.environ.get("XREDUCE_REQUIRE_OPENCL")):
        pytest.skip("no OpenCL device")
    from xreduce import opencl_engine
    original = opencl_engine.OpenCLIntegrationEngine.integrate

    def wrong(self, args, norm):
        sums = original(self, args, norm)
        return type(sums)(sums.signal * 1.01, sums.variance, sums.norm, sums.norm2, sums.count)
    monkeypatch.setattr(opencl_engine.OpenCLIntegrationEngine, "integrate", wrong)
    out_json = tmp_path / "b.json"
    assert main(TINY + ["--json", str(out_json)]) == 1
    opencl = [r for r in json.loads(out_json.read_text())["results"] if r["backend"] == "opencl"]
    assert opencl and all(r["check"].startswith("FAILED") for r in opencl)
    assert all(r["frames_per_s"] is None and r["max_rel_diff"] > 1e-3 for r in opencl)


def test_compare_pyfai_prints_ratio(tmp_path):
    pytest.importorskip("pyFAI")
    out_json = tmp_path / "b.json"
    assert main(TINY + ["--backends", "cython", "--compare", "pyfai", "--json", str(out_json)]) == 0
    results = json.loads(out_json.read_text())["results"]
    ours = [r for r in results if r["backend"] == "cython"]
    theirs = [r for r in results if r["backend"] == "pyfai-cython"]
    assert len(ours) == len(theirs) == 1
    ratio = ours[0]["frames_per_s"] / theirs[0]["frames_per_s"]
    assert ours[0]["ratio_vs_pyfai"] == pytest.approx(ratio)


def test_bad_options_are_clear_errors(capsys):
    for argv, message in ((["--size", "9"], "--size"), (["--frames", "1"], "--frames"),
                          (["--methods", "split"], "--methods"),
                          (["--device", "x"], "platform_id,device_id")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_python_m_entry_point():
    run = subprocess.run([sys.executable, "-m", "xreduce.benchmark", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "xreduce-benchmark" in run.stdout and "--size" in run.stdout
