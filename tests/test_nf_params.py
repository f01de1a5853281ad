"""MIDAS parameter files: reading the manual's formats, rejecting malformed files by line."""
import io
import re
import warnings
from pathlib import Path

import pytest

from xreduce.nf.params import (
    GEOMETRY_KEYS, KEYS, REQUIRED_KEYS, NFParameters, load_yaml, read_parameters, save_yaml,
    write_parameters,
)

DATA = Path(__file__).parent / "data" / "nf"


def test_every_manual_key_is_known():
    """Every key of the seed manual's parameter tables maps to a field."""
    manual = """DataDirectory ReducedFileName StartNr EndNr nDistances Lsd BC px Wavelength
    SpaceGroup
    LatticeParameter OmegaStart OmegaStep OmegaRange BoxSize ExcludePoleAngle GridSize MaxRingRad
    OrientTol MinFracAccept MicFileBinary MicFileText SeedOrientations tx ty tz GridRefactor
    SeedOrientationsAll MinConfidence MaxAngle OutputDirectory RingsToUse SaveNSolutions Wedge
    Ice9Input NearestMisorientation TomoImage TomoPixelSize GridMask GrainsFile GridFileName
    GridPoints""".split()
    for key in manual:
        assert key in KEYS
        assert hasattr(NFParameters(), KEYS[key].field)
    assert set(REQUIRED_KEYS) <= set(manual)


def test_read_full_example():
    p = read_parameters(DATA / "ps_au.txt")
    assert p.n_distances == 2
    assert p.lsd_um == (6000.0, 8000.0)
    assert p.bc_px == ((1024.5, 100.2), (1025.0, 101.0))
    assert p.lattice_parameter == (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)
    assert p.omega_ranges_deg == ((-180.0, 180.0),)
    assert p.box_sizes_um == ((-1500.0, 1500.0, -100.0, 1500.0),)
    assert p.rings_to_use == (1, 2, 3, 4)
    assert p.tilts_deg == (0.0, 0.1, -0.05)
    assert p.grid_mask_um == (-40.0, 40.0, -40.0, 40.0)
    assert p.detector_shape == (2048, 2048)
    assert p.n_frames == 1440
    assert p.space_group == 225 and isinstance(p.space_group, int)
    assert p.extra == {}


def test_read_multires_unknown_key_warns_and_is_kept():
    with pytest.warns(UserWarning, match=r"BlanketSubtraction \(line 39\)"):
        p = read_parameters(DATA / "ps_multires.txt")
    assert p.extra == {"BlanketSubtraction": ("2",)}
    assert p.grid_refactor == (5.0, 2.0, 3.0)
    assert p.ice9_input is True
    assert p.omega_ranges_deg == ((-180.0, -10.0), (10.0, 180.0))
    assert len(p.box_sizes_um) == 2
    assert p.output_directory == "/scratch/ti_out"


def test_text_and_yaml_round_trip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("ps_au.txt", "ps_multires.txt"):
            p = read_parameters(DATA / name)
            save_yaml(p, tmp_path / "p.yaml")
            assert load_yaml(tmp_path / "p.yaml") == p
            write_parameters(p, tmp_path / "p.txt")
            assert read_parameters(tmp_path / "p.txt") == p


def _text_with(lines_to_change):
    """The gold example with some lines replaced (1-based line -> new text, None deletes)."""
    lines = (DATA / "ps_au.txt").read_text().splitlines()
    for no, new in sorted(lines_to_change.items(), reverse=True):
        if new is None:
            del lines[no - 1]
        else:
            lines[no - 1] = new
    return "\n".join(lines) + "\n"


def _line_of(key):
    for i, line in enumerate((DATA / "ps_au.txt").read_text().splitlines(), start=1):
        if line.split() and line.split()[0] == key:
            return i
    raise KeyError(key)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({_line_of("px"): "px abc"}, r":{px}: key 'px' expects float"),
        ({_line_of("LatticeParameter"): "LatticeParameter 4.08 4.08"},
         r":{LatticeParameter}: key 'LatticeParameter' expects 6 value"),
        ({_line_of("nDistances"): "nDistances 3"},
         r":{nDistances}: nDistances is 3 but 2 'Lsd' line"),
        ({_line_of("Wedge"): "OmegaRange 0 10"},
         r"2 'OmegaRange' line\(s\) \(last on line {Wedge}\) but 1 'BoxSize'"),
        ({_line_of("SpaceGroup"): "SpaceGroup 7.5"},
         r":{SpaceGroup}: key 'SpaceGroup' expects int"),
        ({_line_of("GridSize"): "px 2"},
         r":{GridSize}: key 'px' given twice \(first on line {px}\)"),
        ({_line_of("Wavelength"): None}, r"missing required key\(s\): Wavelength"),
        ({_line_of("SpaceGroup"): "SpaceGroup 231"},
         r":{SpaceGroup}: SpaceGroup must be in 1..230"),
    ],
)
def test_malformed_files_name_key_and_line(change, pattern):
    text = _text_with(change)
    lines = {k: _line_of(k) for k in ("px", "LatticeParameter", "nDistances", "SpaceGroup",
                                      "GridSize", "Wedge")}
    with pytest.raises(ValueError, match=pattern.format(**lines)):
        read_parameters(io.StringIO(text))


def test_geometry_subset_and_missing_file(tmp_path):
    text = "\n".join([
        "nDistances 1", "Lsd 6000", "BC 1024 20", "px 1.48", "Wavelength 0.1722",
        "SpaceGroup 225", "LatticeParameter 4.08 4.08 4.08 90 90 90", "OmegaStart 180",
        "OmegaStep -0.25", "OmegaRange -180 180", "BoxSize -1000 1000 -1000 1000",
    ])
    p = read_parameters(io.StringIO(text), required=GEOMETRY_KEYS)
    assert p.wedge_or_zero_deg == 0.0 and p.tilts_deg == (0.0, 0.0, 0.0)
    q = read_parameters(io.StringIO(text + "\nDataDirectory /data/run#2   # a comment\n"),
                        required=GEOMETRY_KEYS)
    assert q.data_directory == "/data/run#2"
    with pytest.raises(ValueError, match="missing required key"):
        read_parameters(io.StringIO(text))
    with pytest.raises(ValueError, match="does not exist"):
        read_parameters(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match=re.escape("OmegaStep must be non-zero")):
        p.replace(omega_step_deg=0.0)
