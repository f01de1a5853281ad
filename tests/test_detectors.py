"""Detectors: registry, module-gap masks (counted independently of the mask code), binning, NeXus.

Masked-pixel counts are computed here from the module/gap layout of REFERENCE.md section 3 by
inclusion-exclusion (gap rows x all columns + gap columns x all rows - overlaps), not with the
package's mask builder; they are also compared pixel by pixel with pyFAI's masks when installed.
"""
import pickle

import warnings

import numpy as np
import pytest

from xreduce.detectors import (_REGISTRY, Detector, _normalise, _pyfai_class, detector_names,
                               get_detector, module_gap_mask)

# name: (pixel_m, shape, module, gap, mid-module masked columns)
TABLE = {
    "Pilatus 1M": (172e-6, (1043, 981), (195, 487), (17, 7), 0),
    "Pilatus 2M": (172e-6, (1679, 1475), (195, 487), (17, 7), 0),
    "Pilatus 6M": (172e-6, (2527, 2463), (195, 487), (17, 7), 0),
    "Pilatus4 4M": (150e-6, (2180, 2073), (255, 513), (20, 7), 0),
    "Eiger 1M": (75e-6, (1065, 1030), (514, 1030), (37, 10), 0),
    "Eiger 4M": (75e-6, (2167, 2070), (514, 1030), (37, 10), 0),
    "Eiger 9M": (75e-6, (3269, 3110), (514, 1030), (37, 10), 0),
    "Eiger 16M": (75e-6, (4371, 4150), (514, 1030), (37, 10), 0),
    "Eiger2 CdTe 4M": (75e-6, (2162, 2068), (512, 1028), (38, 12), 2),
    "Eiger2 CdTe 9M": (75e-6, (3262, 3108), (512, 1028), (38, 12), 2),
    "Eiger2 CdTe 16M": (75e-6, (4362, 4148), (512, 1028), (38, 12), 2),
    "Jungfrau 4M": (75e-6, (2164, 2068), (514, 1030), (36, 8), 0),
    "Lambda 2M": (55e-6, (1556, 1556), (256, 256), (4, 4), 0),
}


def expected_masked(shape, module, gap, mid):
    """Masked pixels of a module grid, by counting modules and gaps (inclusion-exclusion)."""
    rows, cols = shape
    n_mod_rows = (rows + gap[0]) // (module[0] + gap[0])
    n_mod_cols = (cols + gap[1]) // (module[1] + gap[1])
    assert n_mod_rows * module[0] + (n_mod_rows - 1) * gap[0] == rows   # the table is consistent
    assert n_mod_cols * module[1] + (n_mod_cols - 1) * gap[1] == cols
    gap_rows = (n_mod_rows - 1) * gap[0]
    gap_cols = (n_mod_cols - 1) * gap[1] + n_mod_cols * mid
    return gap_rows * cols + gap_cols * rows - gap_rows * gap_cols


@pytest.mark.parametrize("name", sorted(TABLE))
def test_module_detectors(name):
    pixel, shape, module, gap, mid = TABLE[name]
    det = get_detector(name)
    assert det.name == name
    assert det.shape == shape
    assert det.pixel1 == det.pixel2 == pytest.approx(pixel, rel=1e-12)
    assert det.mask.dtype == np.uint8 and det.mask.shape == shape
    assert int(det.mask.sum()) == expected_masked(shape, module, gap, mid)
    # the first pixel is in a module; the first gap row after the first module is masked
    assert det.mask[0, 0] == 0 and det.mask[module[0], 0] == 1
    if shape[1] > module[1]:
        assert det.mask[0, module[1]] == 1


def test_eiger2_cdte_mid_module_columns():
    """Columns 513 and 514 of each 1028-wide module are masked (CdTe sensor join)."""
    det = get_detector("Eiger2 CdTe 4M")
    assert det.mask[0, 513] == det.mask[0, 514] == 1
    assert det.mask[0, 512] == det.mask[0, 515] == 0
    assert det.mask[0, 1040 + 513] == 1
    assert not get_detector("Eiger2 4M").mask[0, 513]


@pytest.mark.parametrize("name, pixel, shape", [
    ("Perkin Elmer", 200e-6, (2048, 2048)),
    ("FReLoN", 50e-6, (2048, 2048)),
    ("Rayonix MX225", 73.2e-6, (3072, 3072)),
    ("Rayonix MX340HS", 88.5e-6, (3840, 3840)),
])
def test_unmasked_detectors(name, pixel, shape):
    det = get_detector(name)
    assert det.shape == shape
    assert det.pixel1 == pytest.approx(pixel, rel=1e-3)
    assert det.mask.sum() == 0


def test_rayonix_binning():
    """Rayonix reads 2x2 binned by default; binning=(1, 1) gives the physical pixels."""
    det = get_detector("Rayonix MX225")
    assert det.binning == (2, 2)
    full = get_detector("Rayonix MX225", binning=(1, 1))
    assert full.shape == (6144, 6144) and full.pixel1 == pytest.approx(225e-3 / 6144, rel=1e-4)


def test_mar345_circle():
    """Masked = pixel centre outside the inscribed circle; the count is the area outside it."""
    det = get_detector("Mar345")
    assert det.shape == (3450, 3450)
    outside = det.mask.sum()
    area_outside = 3450 ** 2 - np.pi * 1725 ** 2
    assert abs(outside - area_outside) / area_outside < 1e-3
    assert det.mask[0, 0] == 1 and det.mask[1725, 1725] == 0 and det.mask[1725, 0] == 0


@pytest.mark.parametrize("alias", ["Pilatus 1M", "pilatus1m", "PILATUS_1M", "pilatus-1m"])
def test_names_are_separator_and_case_insensitive(alias):
    assert get_detector(alias).name == "Pilatus 1M"


def test_eiger2_cdte_spelling():
    assert get_detector("Eiger2_CdTe_4M").name == "Eiger2 CdTe 4M"
    assert get_detector("eiger2cdte4m").name == "Eiger2 CdTe 4M"


def test_unknown_name_suggests():
    with pytest.raises(KeyError, match="Pilatus 1M"):
        get_detector("Pilatus 1N")
    with pytest.raises(KeyError, match="unknown detector 'Foo'"):
        get_detector("Foo")
    with pytest.raises(TypeError, match="name"):
        get_detector(None)


def test_registry_names():
    names = detector_names()
    assert len(names) >= 20
    for name in names:
        assert get_detector(name).name == name


def test_binning_rescales_pixels_and_mask():
    det = get_detector("Pilatus 1M")
    binned = det.binned(2, 3)
    assert binned.shape == (1043 // 2, 981 // 3)
    assert binned.pixel1 == pytest.approx(2 * 172e-6) and binned.pixel2 == pytest.approx(3 * 172e-6)
    assert binned.binning == (2, 3)
    # a binned pixel is masked when any of its pixels is
    expected = det.mask[:1042, :981].reshape(521, 2, 327, 3).max(axis=(1, 3))
    np.testing.assert_array_equal(binned.mask, expected)
    with pytest.raises(ValueError, match="binning"):
        det.binned(0)


def test_detector_validation():
    with pytest.raises(ValueError, match="pixel1"):
        Detector(-1e-4, 1e-4, (4, 4))
    with pytest.raises(ValueError, match="pixel2"):
        Detector(1e-4, float("nan"), (4, 4))
    with pytest.raises(TypeError, match="pixel1"):
        Detector("1e-4", 1e-4, (4, 4))
    with pytest.raises(ValueError, match="shape"):
        Detector(1e-4, 1e-4, (0, 4))
    with pytest.raises(TypeError, match="shape"):
        Detector(1e-4, 1e-4, (4.5, 4))
    with pytest.raises(ValueError, match=r"mask: expected shape \(4, 4\), got \(3, 4\)"):
        Detector(1e-4, 1e-4, (4, 4), mask=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="corners"):
        Detector(1e-4, 1e-4, (4, 4), corners=np.zeros((4, 4, 4, 2)))
    with pytest.raises(ValueError, match="orientation"):
        Detector(1e-4, 1e-4, (4, 4), orientation=5)


def test_immutable_and_picklable():
    det = get_detector("Eiger 1M")
    with pytest.raises(AttributeError):
        det.pixel1 = 1.0
    with pytest.raises(ValueError):
        det.mask[0, 0] = 1          # read-only mask
    copy = pickle.loads(pickle.dumps(det))
    assert copy == det and copy is not det
    assert not copy.mask.flags.writeable


def test_with_mask_adds_a_user_mask():
    det = get_detector("Pilatus 1M")
    user = det.mask.copy()
    user[500:510, 100:120] = 1
    masked = det.with_mask(user)
    assert int(masked.mask.sum()) == int(det.mask.sum()) + 200
    assert (masked.name, masked.shape, masked.pixel1) == (det.name, det.shape, det.pixel1)
    with pytest.raises(ValueError, match="mask"):
        det.with_mask(np.zeros((3, 3)))


def test_module_gap_mask_small():
    mask = module_gap_mask((7, 5), (3, 2), (1, 1))
    expected = np.array([[0, 0, 1, 0, 0]] * 3 + [[1] * 5] + [[0, 0, 1, 0, 0]] * 3)
    np.testing.assert_array_equal(mask, expected)


def test_nexus_round_trip(tmp_path):
    import h5py

    det = get_detector("Pilatus 1M").binned(2)
    path = tmp_path / "det.h5"
    det.write_nexus(path)
    assert Detector.read_nexus(path) == det
    with h5py.File(path, "r") as h5:
        group = h5["/entry/instrument/detector"]
        assert group.attrs["NX_class"] == "NXdetector"
        assert group["x_pixel_size"].attrs["units"] == "m"
        assert group["pixel_mask"].shape == det.shape
    assert not list(tmp_path.glob("*.part"))          # nothing left behind


def test_nexus_corners_and_open_group(tmp_path):
    import h5py

    rng = np.random.default_rng(1)
    corners = rng.random((3, 2, 4, 3)) * 1e-3
    det = Detector(1e-4, 1e-4, (3, 2), name="distorted", corners=corners, orientation=1)
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        det.write_nexus(h5, name="det0")
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        back = Detector.read_nexus(h5)
    assert back == det
    np.testing.assert_array_equal(back.corners, corners)


def test_nexus_errors(tmp_path):
    import h5py

    with h5py.File(tmp_path / "empty.h5", "w") as h5:
        h5.create_group("entry")
    with pytest.raises(ValueError, match="no NXdetector"):
        Detector.read_nexus(tmp_path / "empty.h5")
    with pytest.raises(TypeError, match="target"):
        get_detector("Eiger 1M").write_nexus(42)


PYFAI_NAMES = {
    "Pilatus 1M": "Pilatus1M", "Pilatus 6M": "Pilatus6M", "Pilatus4 4M": "Pilatus4_4M",
    "Eiger 4M": "Eiger4M", "Eiger 16M": "Eiger16M", "Eiger2 4M": "Eiger2_4M",
    "Eiger2 CdTe 4M": "Eiger2CdTe_4M", "Eiger2 CdTe 9M": "Eiger2CdTe_9M",
    "Jungfrau 4M": "Jungfrau4M", "Lambda 2M": "Lambda2M", "Mar345": "Mar345",
    "Rayonix MX225": "RayonixMx225", "Rayonix MX340HS": "RayonixMx340hs",
    "FReLoN": "FReLoN",
}


@pytest.mark.parametrize("name", sorted(PYFAI_NAMES))
def test_against_pyfai(name):
    """Same shape, pixel size and mask."""
    detectors = pytest.importorskip("pyFAI.detectors")
    theirs = detectors.detector_factory(PYFAI_NAMES[name])
    ours = get_detector(name)
    assert ours.shape == tuple(theirs.shape)
    assert ours.pixel1 == pytest.approx(theirs.pixel1, rel=1e-12)
    their_mask = theirs.mask
    if their_mask is None:
        assert ours.mask.sum() == 0
    else:
        np.testing.assert_array_equal(ours.mask, their_mask != 0)


@pytest.mark.parametrize("name, pyfai_name", [("Pilatus 1M", "Pilatus1M"), ("Eiger2 CdTe 4M", "Eiger2CdTe_4M")])
def test_read_pyfai_detector_file(tmp_path, name, pyfai_name):
    """Detector files written by pyFAI (pixel_size, mask, group named after the detector)."""
    detectors = pytest.importorskip("pyFAI.detectors")
    path = tmp_path / "pyfai_detector.h5"
    detectors.detector_factory(pyfai_name).save(str(path))
    assert Detector.read_nexus(path) == get_detector(name)


@pytest.mark.parametrize("pyfai_name", ["Pixirad1", "Xpad_flat", "curved"])
def test_detector_files_with_corners_both_ways(tmp_path, pyfai_name):
    """Explicit corners in detector files, in pyFAI's (z, y, x) order: pyFAI's NexusDetector
    reads ours with the same corners, and we read pyFAI's (float32 there: 2e-7). "curved":
    small random corners off the plane (Cirpad's 1.3 M pixels take 14 s to compress)."""
    detectors = pytest.importorskip("pyFAI.detectors")
    if pyfai_name == "curved":
        corners = np.random.default_rng(3).random((5, 6, 4, 3)) * 1e-3
        (tmp_path / "made").mkdir()
        Detector(1e-4, 1e-4, (5, 6), corners=corners).write_nexus(tmp_path / "made" / "d.h5")
        theirs = detectors.NexusDetector(str(tmp_path / "made" / "d.h5"))
        np.testing.assert_allclose(theirs.get_pixel_corners()[..., 0], corners[..., 2])
    else:
        theirs = detectors.detector_factory(pyfai_name)
    ours = Detector.from_pyfai(theirs)
    ours.write_nexus(tmp_path / "ours.h5")
    read_by_pyfai = detectors.NexusDetector(str(tmp_path / "ours.h5"))
    np.testing.assert_allclose(read_by_pyfai.get_pixel_corners(), theirs.get_pixel_corners(),
                               rtol=2e-7, atol=1e-12)
    theirs.save(str(tmp_path / "theirs.h5"))
    back = Detector.read_nexus(tmp_path / "theirs.h5")
    np.testing.assert_allclose(back.corners, ours.corners, rtol=2e-7, atol=1e-12)
    np.testing.assert_array_equal(back.mask, ours.mask)


def test_detector_files_of_earlier_xreduce_keep_their_corner_order(tmp_path):
    """Files xreduce wrote before stored corners as (slow, fast, normal), said so in the
    dataset's doc attribute, and still read the same."""
    import h5py

    corners = np.random.default_rng(2).random((3, 2, 4, 3)) * 1e-3
    det = Detector(1e-4, 1e-4, (3, 2), name="distorted", corners=corners)
    det.write_nexus(tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5", "a") as h5:
        group = h5["entry/instrument/detector"]
        del group["pixel_corners"]
        old = group.create_dataset("pixel_corners", data=corners)
        old.attrs["doc"] = "(rows, cols, 4 corners, (slow, fast, normal))"
    np.testing.assert_array_equal(Detector.read_nexus(tmp_path / "x.h5").corners, corners)


def test_largest_integer_value_is_invalid_only_for_dectris_detectors():
    from xreduce.detectors import Detector, get_detector
    assert get_detector("Pilatus 1M").max_value_invalid
    assert get_detector("Eiger2 CdTe 4M").max_value_invalid
    assert not get_detector("Perkin Elmer").max_value_invalid
    assert not Detector(1e-4, 1e-4, (4, 4)).max_value_invalid
    assert Detector(1e-4, 1e-4, (4, 4), max_value_invalid=True).max_value_invalid
    assert get_detector("Pilatus 1M").binned(2).max_value_invalid
    with pytest.raises(TypeError, match="max_value_invalid"):
        Detector(1e-4, 1e-4, (4, 4), max_value_invalid="yes")


def test_max_value_invalid_survives_nexus(tmp_path):
    from xreduce.detectors import Detector
    det = Detector(1e-4, 1e-4, (4, 4), name="Eiger 1M", max_value_invalid=False)
    det.write_nexus(tmp_path / "d.h5")
    assert Detector.read_nexus(tmp_path / "d.h5") == det


# ---------------------------------------------------------------------------------------------
# pyFAI's whole registry (issue 15): every detector resolves by name, from a PONI file too,
# with pyFAI's shape, pixel sizes and mask; own definitions for the common beamline detectors.
# ---------------------------------------------------------------------------------------------

OWN_DEFINITIONS = [
    "Pilatus 100k", "Pilatus 300k", "Pilatus 300kw", "Pilatus CdTe 300k", "Pilatus CdTe 300kw",
    "Pilatus CdTe 1M", "Pilatus4 1M", "Pilatus4 2M", "Pilatus4 4M", "Pilatus4 CdTe 1M",
    "Eiger 500k", "Eiger 1M", "Eiger2 500k", "Eiger2 1M", "Eiger2 CdTe 500k", "Eiger2 CdTe 1M",
    "Lambda 60k", "Lambda 250k", "Lambda 750k", "Rayonix MX170", "Rayonix MX225HS",
    "Rayonix MX300HS", "Maxipix", "Maxipix 2x2", "Xpad S540 flat", "Pixium 4700",
    "Perkin Elmer",
]


def test_own_definitions_need_no_pyfai(monkeypatch):
    """The listed detectors come from xreduce's own registry (pyFAI made unimportable)."""
    import sys

    monkeypatch.setitem(sys.modules, "pyFAI", None)
    monkeypatch.setitem(sys.modules, "pyFAI.detectors", None)
    for name in OWN_DEFINITIONS:
        assert get_detector(name).name == name
    with pytest.raises(KeyError, match="unknown detector"):
        get_detector("Pixirad1")            # only pyFAI knows it


# Curved detectors of 12-17 M pixels: their explicit corners take 1.2-1.6 GB in float64 (with
# pyFAI's float32 ones, ~2.7 GB and 10-20 s each to build on a loaded 2-core machine): each is
# its own test case, so that pytest-xdist spreads them and only one is held at a time.
HUGE_CURVED = ("Aarhus", "Rapid", "Jungfrau_16M_cor")
# Detectors with explicit corners of more pixels than this have a subsample of them compared.
CORNER_SAMPLE_ABOVE = 1_000_000


def _pyfai_registry():
    detectors = pytest.importorskip("pyFAI.detectors")
    by_class = {}
    for key, cls in detectors.ALL_DETECTORS.items():
        by_class.setdefault(cls, []).append(key)
    return detectors, by_class


def _poni_as_pyfai_writes_it(theirs, path):
    """A PONI file naming `theirs`, written by pyFAI itself (its Detector_config included)."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    AzimuthalIntegrator(dist=0.1, poni1=0.01, poni2=0.01, wavelength=1e-10,
                        detector=theirs).write(str(path))
    return path


def _assert_same_detector(ours, theirs, label):
    """Shape, pixel sizes, mask pixel for pixel and, for explicit corners, their positions
    (all of them, or every 7th row and 5th column above CORNER_SAMPLE_ABOVE pixels; to
    float32 precision, pyFAI's type for them: our own Xpad S540 flat is computed in float64)."""
    assert ours.shape == tuple(theirs.shape), label
    assert (ours.pixel1, ours.pixel2) == (theirs.pixel1, theirs.pixel2), label
    their_mask = np.zeros(theirs.shape, bool) if theirs.mask is None else theirs.mask != 0
    assert np.array_equal(ours.mask != 0, their_mask), label
    regular = getattr(theirs, "uniform_pixel", True) and getattr(theirs, "IS_FLAT", True)
    assert (ours.corners is None) == regular, label
    if ours.corners is not None:
        sample = (slice(None), slice(None))
        if ours.shape[0] * ours.shape[1] > CORNER_SAMPLE_ABOVE:
            sample = (slice(None, None, 7), slice(None, None, 5))
        zyx = theirs.get_pixel_corners()[sample]
        assert ours.corners.shape[2:] == zyx.shape[2:], label
        for axis, their_axis in enumerate((1, 2, 0)):   # pyFAI's corners are float32
            np.testing.assert_allclose(ours.corners[sample][..., axis], zyx[..., their_axis],
                                       rtol=2e-7, atol=1e-12, err_msg=label)


def test_every_pyfai_detector_loads_from_a_poni_file_with_pyfais_mask(tmp_path):
    """For each class of pyFAI's registry (the huge curved ones: next test): a PONI file
    naming it, as pyFAI writes it, loads, and the detector has pyFAI's shape, pixel sizes,
    mask pixel for pixel and corners (hexagonal Pixirad pixels included). The generic
    ``Detector`` loads from the pixel sizes and shape of its Detector_config."""
    from xreduce.geometry import Geometry

    detectors, by_class = _pyfai_registry()
    checked, hexagonal = 0, []
    for cls, names in sorted(by_class.items(), key=lambda item: item[0].__name__):
        if cls.__name__ in HUGE_CURVED:
            continue
        theirs = cls(1e-4, 1.2e-4, max_shape=(100, 120)) if cls is detectors.Detector \
            else cls()
        path = _poni_as_pyfai_writes_it(theirs, tmp_path / f"{cls.__name__}.poni")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # config keys such as Cirpad's
            ours = Geometry.load(path).detector
        _assert_same_detector(ours, theirs, cls.__name__)
        if ours.corners is not None and ours.corners.shape[2] == 6:
            hexagonal.append(cls.__name__)
        for alias in names:                       # every registry spelling resolves
            if cls is detectors.Detector:
                continue
            model = _REGISTRY.get(_normalise(alias))
            assert (model is not None and model.name == ours.name) or \
                _pyfai_class(alias) is cls, alias
        checked += 1
    assert checked + len(HUGE_CURVED) == len(by_class)
    assert sorted(hexagonal) == ["Pixirad1", "Pixirad2", "Pixirad4", "Pixirad8"]


@pytest.mark.parametrize("name", HUGE_CURVED)
def test_huge_curved_pyfai_detectors_load_from_a_poni_file(tmp_path, name):
    """The 3 largest curved detectors: shape, pixel sizes, mask, and every 7th row and 5th
    column of their corners equal pyFAI's."""
    from xreduce.geometry import Geometry

    detectors, _ = _pyfai_registry()
    theirs = getattr(detectors, name)()
    path = _poni_as_pyfai_writes_it(theirs, tmp_path / f"{name}.poni")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "radius": pyFAI's default is the one used
        ours = Geometry.load(path).detector
    assert ours.shape[0] * ours.shape[1] > CORNER_SAMPLE_ABOVE
    _assert_same_detector(ours, theirs, name)


def test_pyfai_round_trip_keeps_parameters_and_masks():
    """pyFAI object -> xreduce -> pyFAI: identical PONI parameters, detector and mask."""
    pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from xreduce.geometry import Geometry

    for name in ("Pilatus1M", "Eiger2_CdTe_1M", "Pilatus4_CdTe_1M", "Mar345", "Cirpad",
                 "Perkin", "RayonixMx225hs", "Xpad_flat", "Pixirad1"):
        theirs = AzimuthalIntegrator(dist=0.123, poni1=0.021, poni2=0.034, rot1=0.012,
                                     rot2=-0.023, rot3=0.034, detector=name, wavelength=7.1e-11)
        mask = np.zeros(theirs.detector.shape, np.int8)
        mask[3:9, 5:7] = 1
        if theirs.detector.mask is not None:
            mask |= np.asarray(theirs.detector.mask, np.int8)
        theirs.detector.mask = mask
        geometry = Geometry.from_pyfai(theirs)
        assert (geometry.detector.corners is not None) == \
            (name in ("Cirpad", "Xpad_flat", "Pixirad1")), name
        back = geometry.to_pyfai()     # explicit corners: pyFAI's class of the same corners
        for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
            assert getattr(back, key) == getattr(theirs, key), (name, key)
        assert back.detector.shape == theirs.detector.shape, name
        assert (back.detector.pixel1, back.detector.pixel2) == \
            (theirs.detector.pixel1, theirs.detector.pixel2), name
        assert tuple(back.detector.binning) == tuple(theirs.detector.binning), name
        np.testing.assert_array_equal(np.asarray(back.detector.mask) != 0, mask != 0)
        assert Geometry.from_pyfai(back) == geometry, name


def test_max_shape_is_pyfais():
    assert get_detector("Rayonix MX225HS").max_shape == (5760, 5760)
    assert get_detector("Pilatus 1M").max_shape == (1043, 981)
