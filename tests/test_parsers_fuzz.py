"""Seeded mutation fuzzing of the PONI parser and the NeXus detector reader (issue 16).

Each parser gets >= 2000 mutated inputs built from valid files. Every input must either load
or fail with ValueError / TypeError / KeyError / OSError whose message names the file (and,
for PONI files, the key or line), or with the MemoryError of
:func:`xreduce.limits.check_allocation` (naming the file and key) -- never anything else, and
never an allocation above the 2 GiB limit set for the test (XREDUCE_MAX_ALLOCATION_BYTES).
HDF5 files are mutated structurally (datasets replaced, retyped, reshaped, declared huge,
attributes changed), not byte by byte: the HDF5 library's own handling of corrupt bytes is
not ours to test.
"""
from __future__ import annotations

import io
import json
import random
import warnings

import h5py
import numpy as np
import pytest

from xreduce.detectors import Detector, get_detector
from xreduce.poni import read_poni

ALLOWED = (ValueError, TypeError, KeyError, OSError, MemoryError)
LIMIT = 2 << 30


@pytest.fixture(autouse=True)
def _allocation_limit(monkeypatch):
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(LIMIT))


BASE_PONI = [
    "poni_version: 2.1\nDetector: Pilatus100k\n"
    'Detector_config: {"pixel1": 0.000172, "pixel2": 0.000172, "orientation": 3}\n'
    "Distance: 0.1\nPoni1: 0.01\nPoni2: 0.02\nRot1: 0.001\nRot2: 0\nRot3: 0\n"
    "Wavelength: 1e-10\n",
    "poni_version: 2\nDetector: Detector\n"
    'Detector_config: {"pixel1": 0.0001, "pixel2": 0.0001, "max_shape": [64, 48]}\n'
    "Distance: 0.2\nPoni1: 0.001\nPoni2: 0.002\nRot1: 0\nRot2: 0\nRot3: 0\n",
    "PixelSize1: 5e-05\nPixelSize2: 5e-05\nDistance: 0.15\nPoni1: 0.01\nPoni2: 0.01\n"
    "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 7e-11\n",
    "poni_version: 3\nDetector: Maxipix\n"
    'Detector_config: {"orientation": 2, "binning": [2, 2], "sensor": {"material": "Si"}}\n'
    "Distance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0.1\nParallax: False\n",
]
BAD_VALUES = ["abc", "", "nan", "inf", "-1", "0", "1e308", "-1e-300", "[1, 2]", "{}", "None",
              "1e5", "2.7", "null", "true", "\"x\"", "0x10", "1,5", "  ", "100000"]
BAD_CONFIG = [("binning", [0, 0]), ("binning", [1]), ("binning", "2x2"), ("binning", [1.5, 2]),
              ("orientation", 2.7), ("orientation", 7), ("orientation", "3"), ("orientation", -1),
              ("pixel1", "abc"), ("pixel1", -1e-4), ("pixel1", 0), ("pixel1", 1e9),
              ("pixel2", None), ("pixel2", [1e-4]), ("max_shape", [100000, 100000]),
              ("max_shape", [1e5, 1e5]), ("max_shape", [0, 10]), ("max_shape", [10]),
              ("max_shape", [2 ** 40, 2]), ("max_shape", "big"), ("filename", 3),
              ("filename", "/nonexistent/detector.h5"), ("splineFile", 5), ("unknown", 1),
              ("binning", [10 ** 6, 10 ** 6]), ("max_shape", [-5, 5])]


def _mutate_poni(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    kind = rng.randrange(8)
    i = rng.randrange(len(lines))
    if kind == 0:                                   # a value replaced
        key = lines[i].partition(":")[0]
        lines[i] = f"{key}: {rng.choice(BAD_VALUES)}"
    elif kind == 1:                                 # a Detector_config entry replaced
        config = {"pixel1": 1e-4, "pixel2": 1e-4, "max_shape": [32, 32]}
        for _ in range(rng.randrange(1, 3)):
            key, value = rng.choice(BAD_CONFIG)
            config[key] = value
        name = rng.choice(["Detector", "Pilatus100k", "Maxipix", "NexusDetector", "Nope"])
        lines = [ln for ln in lines if not ln.lower().startswith(("detector", "pixelsize"))]
        lines += [f"Detector: {name}", f"Detector_config: {json.dumps(config)}"]
    elif kind == 2:                                 # a line dropped or doubled
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(i, lines[i])
    elif kind == 3:                                 # truncated
        return "\n".join(lines).encode()[: rng.randrange(len(text))]
    elif kind == 4:                                 # random bytes flipped (non-UTF-8 too)
        raw = bytearray("\n".join(lines).encode())
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    elif kind == 5:                                 # separators broken
        lines[i] = lines[i].replace(":", rng.choice(["", "=", "::", " : :"]), 1)
    elif kind == 6:                                 # broken or deep JSON
        lines.append(rng.choice(["Detector_config: {\"pixel1\": ", "Detector_config: [1, 2]",
                                 "Detector_config: " + "[" * 5000 + "]" * 5000,
                                 "Detector_config: {\"max_shape\": [65536, 65536], "
                                 "\"pixel1\": 1e-4, \"pixel2\": 1e-4}"]))
    else:                                           # version games
        lines.insert(0, f"poni_version: {rng.choice(['4', '2.5', 'x', '1', '3', '-1'])}")
    return "\n".join(lines).encode()


def test_poni_parser_fuzz(tmp_path):
    rng = random.Random(20261203)
    path = tmp_path / "fuzz.poni"
    outcomes = {"loaded": 0}
    for case in range(2200):
        path.write_bytes(_mutate_poni(rng, rng.choice(BASE_PONI)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                geometry = read_poni(path, shape=(32, 32) if case % 3 == 0 else None)
            assert geometry.detector.mask.nbytes <= LIMIT
            outcomes["loaded"] += 1
        except ALLOWED as error:
            message = str(error)
            assert str(path) in message, (case, type(error).__name__, message)
            outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
    assert outcomes["loaded"] > 50 and outcomes.get("ValueError", 0) > 500, outcomes


@pytest.mark.parametrize("key, value, message", [
    ("binning", [0, 0], "binning"), ("orientation", 2.7, "orientation"),
    ("pixel1", "abc", "pixel1"), ("max_shape", [100000, 100000], "max_shape")])
def test_poni_config_values_named(tmp_path, key, value, message):
    """The issue's examples: file, line and key named, the huge shape refused before any
    9 GiB mask is built."""
    config = {"pixel1": 1e-4, "pixel2": 1e-4, "max_shape": [64, 64], key: value}
    path = tmp_path / "bad.poni"
    path.write_text("poni_version: 2.1\nDetector: Detector\n"
                    f"Detector_config: {json.dumps(config)}\nDistance: 0.1\nPoni1: 0\n"
                    "Poni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n")
    with pytest.raises(ALLOWED) as info:
        read_poni(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    assert message in str(info.value)


def test_poni_non_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.poni"
    path.write_bytes("Detector: Pilatus100k\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as info:
        read_poni(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


# ------------------------------------------------------------------------- NeXus detectors

MAXIPIX = get_detector("Maxipix")
PLAIN = Detector(1e-4, 2e-4, (16, 12), mask=np.eye(16, 12))


def _write_ours(h5):
    group = h5.create_group("entry/instrument")
    group.attrs["NX_class"] = "NXinstrument"
    MAXIPIX.write_nexus(group, "detector")


def _write_plain(h5):
    PLAIN.write_nexus(h5, "detector")


def _write_pyfai_style(h5):
    g = h5.create_group("entry/Pilatus100k")
    g.attrs["NX_class"] = "NXdetector"
    g["pixel_size"] = [172e-6, 172e-6]
    g["mask"] = np.zeros((195, 487), np.int8)
    g["binning"] = [1, 1]


BASES = [_write_ours, _write_plain, _write_pyfai_style]


def _mutate_nexus(rng: random.Random, h5) -> None:
    groups = []
    h5.visititems(lambda name, obj: groups.append(obj)
                  if isinstance(obj, h5py.Group) and obj.attrs.get("NX_class") in
                  ("NXdetector", b"NXdetector") else None)
    g = groups[0]
    for _ in range(rng.randrange(1, 4)):
        names = list(g) or ["pixel_mask"]
        key = rng.choice(names + ["shape", "pixel_corners", "local_name", "orientation"])
        if key in g:
            del g[key]
        kind = rng.randrange(9)
        if kind == 0:
            continue                                            # removed
        if kind == 1:                                           # declared huge, chunked
            g.create_dataset(key, shape=(100000, 100000), dtype="u1", chunks=(64, 64))
        elif kind == 2:
            g[key] = rng.choice(["abc", b"\xff\xfe", "m"])      # text
        elif kind == 3:
            g[key] = np.array(rng.choice([-1, 0, 2 ** 40, 7]))  # scalars
        elif kind == 4:
            g[key] = np.zeros(rng.choice([(3,), (2, 2, 2), (5, 7), (0,)]))
        elif kind == 5:
            g[key] = np.array([np.nan, np.inf])
        elif kind == 6:                                         # corners, declared huge
            g.create_dataset(key, shape=(30000, 30000, 4, 3), dtype="f8",
                             chunks=(8, 8, 4, 3))
        elif kind == 7:
            g[key] = np.array([1.5e-4, 2e-4]) if rng.random() < 0.5 else np.array([3, 3])
        else:
            g[key] = np.ones((16, 12), bool)
        if rng.random() < 0.3:
            g[key].attrs["units"] = rng.choice(["furlong", "mm", b"\xff", "um"])


def _image(write) -> bytes:
    """The bytes of a small HDF5 file written by ``write``."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        write(h5)
    return buffer.getvalue()


def test_nexus_detector_reader_fuzz():
    """In-memory HDF5 files: each case opens a fresh copy of a base file's bytes, mutates it
    and reads it."""
    rng = random.Random(16)
    images = [_image(write) for write in BASES]
    outcomes = {"loaded": 0}
    for case in range(2000):
        with h5py.File(io.BytesIO(rng.choice(images)), "r+") as h5:
            _mutate_nexus(rng, h5)
            name = h5.filename
            try:
                det = Detector.read_nexus(h5)
                assert det.mask.nbytes <= LIMIT
                outcomes["loaded"] += 1
            except ALLOWED as error:
                assert name in str(error), (case, type(error).__name__, str(error))
                outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
    assert outcomes["loaded"] > 50 and len(outcomes) >= 3, outcomes


def test_nexus_huge_mask_refused_before_reading(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as h5:
        g = h5.create_group("entry/detector")
        g.attrs["NX_class"] = "NXdetector"
        g["x_pixel_size"] = 1e-4
        g["y_pixel_size"] = 1e-4
        g.create_dataset("pixel_mask", shape=(200000, 200000), dtype="u1", chunks=(64, 64))
    with pytest.raises(MemoryError, match="pixel_mask") as info:
        Detector.read_nexus(path)
    assert str(path) in str(info.value)
