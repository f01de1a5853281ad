"""MIDAS parameter files: reading the manual's formats, rejecting malformed files by line."""
import io
import re
import warnings
from pathlib import Path

import pytest

from xreduce.nf.params import (
    GEOMETRY_KEYS, KEYS, MANUAL_REQUIRED_KEYS, REQUIRED_KEYS, NFParameters, load_yaml, read_parameters, save_yaml,
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


def test_read_multires_example():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = read_parameters(DATA / "ps_multires.txt")
    assert p.extra == {} and p.blanket_subtraction == 2.0
    assert p.grid_refactor == (5.0, 2.0, 3.0)
    assert p.ice9_input is True
    assert p.omega_ranges_deg == ((-180.0, -10.0), (10.0, 180.0))
    assert len(p.box_sizes_um) == 2
    assert p.output_directory == "/scratch/ti_out"


def test_unknown_key_warns_and_is_kept():
    text = (DATA / "ps_au.txt").read_text() + "MyOwnKey 1 2\n"
    n = len(text.splitlines())
    with pytest.warns(UserWarning, match=rf"MyOwnKey \(line {n}\)"):
        p = read_parameters(io.StringIO(text))
    assert p.extra == {"MyOwnKey": ("1", "2")}


def test_midas_example_file_is_read_without_warnings():
    """The keys of MIDAS's own NF_HEDM/Example/ps_au.txt (no DataDirectory, ReducedFileName or
    SeedOrientations) are read by default, none unknown."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = read_parameters(DATA / "midas_example_keys.txt")
    assert p.extra == {}
    assert p.lsd_um == (8289.154576, 10290.724494)
    assert p.nr_files_per_distance == 1440 and p.frames_per_distance == 1440
    assert (p.blanket_subtraction, p.med_filt_radius, p.gauss_filt_radius, p.log_mask_radius,
            p.do_log_filter) == (5.0, 1, 4.0, 10, 0)
    assert p.ext_orig == "tif" and p.nr_orientations == 243129 and p.bc_tol_px == (2.0, 0.2)
    assert p.num_phases == 1 and p.phase_nr == 1 and p.only_spots_info == 1
    with pytest.raises(ValueError, match="missing required key.*DataDirectory"):
        read_parameters(DATA / "midas_example_keys.txt", required=MANUAL_REQUIRED_KEYS)


def test_aliases_semicolons_and_repeated_grid_points():
    text = (DATA / "midas_example_keys.txt").read_text()
    text = text.replace("LatticeParameter", "LatticeConstant").replace("MaxRingRad", "RhoD")
    text = text.replace("px 1.48", "px 1.48;").replace("SpaceGroup 225", "SpaceGroup 225 ;")
    text += "GridPoints " + " ".join(str(i) for i in range(12)) + "\n"
    text += "GridPoints " + " ".join(str(i + 12) for i in range(12)) + ";\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = read_parameters(io.StringIO(text))
    assert p.lattice_parameter == (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)
    assert p.max_ring_rad_um == 2800.0 and p.px_um == 1.48 and p.space_group == 225
    assert p.grid_points == (tuple(float(i) for i in range(12)),
                             tuple(float(i + 12) for i in range(12)))
    with pytest.raises(ValueError, match="key 'LatticeParameter' given twice"):
        read_parameters(io.StringIO(text + "LatticeParameter 4 4 4 90 90 90\n"))


@pytest.mark.parametrize("line, pattern", [
    ("px inf", "key 'px' expects a finite number, got 'inf'"),
    ("px -1.48", r"px must be in \(0, inf\), got -1.48"),
    ("OmegaStep nan", "key 'OmegaStep' expects a finite number, got 'nan'"),
    ("RingsToUse 1e20", "key 'RingsToUse' expects an integer of at most 2147483647"),
    ("RingsToUse 0", "RingsToUse must be ring numbers >= 1"),
    ("MinFracAccept 1.5", r"MinFracAccept must be in \[0, 1\]"),
    ("MedFiltRadius 3", r"MedFiltRadius must be in \[0, 2\]"),
    ("nDistances 1000", r"nDistances must be in \[1, 64\]"),
    ("NrPixels 0", "NrPixels must be in"),
    ("EndNr -5", "EndNr must be in"),
    ("GridRefactor 5 2 0.5", "GridRefactor expects"),
    ("ExcludePoleAngle 90", r"ExcludePoleAngle must be in \[0, 90\)"),
])
def test_values_are_type_and_range_checked_with_line(line, pattern):
    key = line.split()[0]
    lines = (DATA / "midas_example_keys.txt").read_text().splitlines()
    lines = [x for x in lines if not x.startswith(key + " ")] + [line]
    with pytest.raises(ValueError, match=pattern) as info:
        read_parameters(io.StringIO("\n".join(lines) + "\n"))
    if "ExcludePole" not in key and "GridRefactor" not in key:
        assert f"<stream>:{len(lines)}:" in str(info.value) or "stream" in str(info.value)


def test_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "ps.txt"
    path.write_bytes((DATA / "ps_au.txt").read_bytes() + b"Comment \xff\xfe\n")
    with pytest.raises(ValueError, match=r"ps.txt: parameter file is not UTF-8"):
        read_parameters(path)


def test_wavelength_that_would_allocate_too_much_is_refused(monkeypatch):
    from xreduce.nf.reflections import reflections_from_parameters

    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(2**31))
    p = read_parameters(DATA / "midas_example_keys.txt").replace(wavelength_A=1e-9)
    with pytest.raises(MemoryError, match="Wavelength"):
        reflections_from_parameters(p)


def test_text_and_yaml_round_trip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("ps_au.txt", "ps_multires.txt", "midas_example_keys.txt"):
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
         r":{SpaceGroup}: SpaceGroup must be in \[1, 230\], got 231"),
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
