"""``xreduce demo`` (for now: prints the demo geometry) and the demo PONI."""
from xreduce.cli.main import main
from xreduce.demo_data import DEMO_PONI, demo_geometry


def test_demo_geometry_matches_its_poni():
    geo = demo_geometry()
    assert geo.detector.name == "Pilatus 1M"
    assert geo.wavelength == 1e-10
    assert (geo.dist, geo.rot1, geo.rot2) == (0.2, 0.035, -0.052)
    assert "Rot1: 0.035" in DEMO_PONI


def test_cli_demo_prints_geometry(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Pilatus 1M" in out and "1043 x 981" in out
    assert "directDist" in out and "2theta (deg)" in out
