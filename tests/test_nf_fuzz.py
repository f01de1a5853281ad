"""Fuzzing the NF parsers (parameter files, text and binary .mic) with seeded mutations.

Every mutated file either reads, or fails with ValueError/TypeError/KeyError/OSError (or
MemoryError from the allocation guard) whose message names the file; nothing crashes and no
allocation passes 2 GiB (XREDUCE_MAX_ALLOCATION_BYTES). What reads is then fed to the
reflection list and the grid, which must respect the same rules.
"""
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from xreduce.nf.grid import grid_from_parameters
from xreduce.nf.mic import read_mic, read_mic_binary, write_mic, write_mic_binary
from xreduce.nf.params import ALIASES, KEYS, read_parameters
from xreduce.nf.reflections import reflections_from_parameters

DATA = Path(__file__).parent / "data" / "nf"
EXPECTED = (ValueError, TypeError, KeyError, OSError, MemoryError)
N_CASES = 2000

_JUNK = ["nan", "inf", "-inf", "1e400", "-1", "0", "1e20", "-1e20", "2147483648", "1e-300",
         "1e-9", "abc", "", "0x10", "1,5", "+", "--3", "3.5", "7", "\u00e9", "999999999",
         "1e5", "-0", ";", "#", "\t", "9" * 400]


_KEY_NAMES = list(KEYS) + list(ALIASES)


class _Named(io.StringIO):
    name = "fuzz.txt"


class _NamedBytes(io.BytesIO):
    name = "fuzz.txt"


def _mutate_lines(lines, rng):
    lines = list(lines)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 8))
        i = int(rng.integers(0, len(lines)))
        tokens = lines[i].split()
        if op == 0 and len(tokens) > 1:  # replace one value
            tokens[int(rng.integers(1, len(tokens)))] = str(rng.choice(_JUNK))
            lines[i] = " ".join(tokens)
        elif op == 1:  # delete a line
            del lines[i]
        elif op == 2:  # duplicate a line
            lines.insert(i, lines[i])
        elif op == 3 and tokens:  # drop or add values
            lines[i] = " ".join(tokens[:-1] if rng.random() < 0.5 else tokens + ["1"])
        elif op == 4:  # a random key with random values
            key = str(rng.choice(list(KEYS) + list(ALIASES)))
            vals = " ".join(str(rng.choice(_JUNK)) for _ in range(int(rng.integers(0, 7))))
            lines.insert(i, f"{key} {vals}")
        elif op == 5:  # cut a line short
            lines[i] = lines[i][: int(rng.integers(0, len(lines[i]) + 1))]
        elif op == 6 and tokens:  # scale a number a lot
            try:
                v = float(tokens[-1])
                tokens[-1] = repr(v * float(rng.choice([1e-12, 1e12, -1, 0])))
                lines[i] = " ".join(tokens)
            except ValueError:
                pass
        else:  # a trailing semicolon or comment
            lines[i] = lines[i] + str(rng.choice([";", " ;", " # c", "#x"]))
        if not lines:
            lines = ["px 1"]
    return lines


def test_fuzz_parameter_files(monkeypatch):
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(2 * 1024**3))
    bases = [(DATA / n).read_text().splitlines()
             for n in ("midas_example_keys.txt", "ps_au.txt", "ps_multires.txt")]
    rng = np.random.default_rng(20261203)
    outcomes = {"read": 0, "error": 0}
    for case in range(N_CASES):
        lines = _mutate_lines(bases[case % len(bases)], rng)
        text = "\n".join(lines) + "\n"
        if case % 50 == 0:  # bytes that are not UTF-8
            source = _NamedBytes(text.encode() + b"\xff\xfe junk\n")
        else:
            source = _Named(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                p = read_parameters(source, required=())
            except EXPECTED as exc:
                message = str(exc)
                assert "fuzz.txt" in message, (case, text, exc)
                assert "not UTF-8" in message or any(
                    f"'{k}'" in message or f"{k} " in message for k in _KEY_NAMES), message
                outcomes["error"] += 1
                continue
        outcomes["read"] += 1
        for build in (reflections_from_parameters, grid_from_parameters):
            try:
                build(p)
            except EXPECTED as exc:
                assert str(exc), (case, build.__name__)
    assert outcomes["read"] > 300 and outcomes["error"] > 300, outcomes


def _mic_text(rng, n=6):
    import tempfile

    folder = tempfile.mkdtemp()
    path = Path(folder) / "base.mic"
    write_mic(path, rng.uniform(-50, 50, n), rng.uniform(-50, 50, n), 2.5,
              rng.choice([-1, 1], n), rng.uniform(0, 3, (n, 3)), rng.uniform(0.1, 1, n),
              row=rng.integers(0, 100, n), orientation_id=rng.integers(1, 5, n),
              time=rng.uniform(0, 1, n))
    return path.read_text()


def test_fuzz_text_mic(tmp_path, monkeypatch):
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(2 * 1024**3))
    rng = np.random.default_rng(7)
    base = _mic_text(rng).splitlines()
    old_style = [" ".join(line.split()[:11]) if not line.startswith("%") else line
                 for line in base]
    path = tmp_path / "fuzz.mic"
    counts = {"read": 0, "error": 0}
    for case in range(N_CASES):
        lines = list(base if case % 2 else old_style)
        for _ in range(int(rng.integers(1, 3))):
            i = int(rng.integers(0, len(lines)))
            cells = lines[i].split("\t") if "\t" in lines[i] else lines[i].split(" ")
            op = int(rng.integers(0, 4))
            if op == 0:
                cells[int(rng.integers(0, len(cells)))] = str(rng.choice(
                    _JUNK + ["300", "-1", "2", "1.0000001", "-0.5"]))
            elif op == 1:
                cells = cells[: int(rng.integers(0, len(cells) + 1))]
            elif op == 2:
                cells.append(str(rng.choice(_JUNK)))
            else:
                lines.insert(i, lines[i])
            lines[i] = ("\t" if case % 2 else " ").join(cells)
        data = ("\n".join(lines) + "\n").encode()
        if case % 40 == 0:
            data += b"\xff\x00\n"
        path.write_bytes(data)
        try:
            mic = read_mic(path)
        except EXPECTED as exc:
            assert "fuzz.mic" in str(exc), (case, exc)
            counts["error"] += 1
            continue
        counts["read"] += 1
        assert np.isin(mic.ud, (-1, 0, 1)).all() and np.isfinite(mic.euler_rad).all()
        assert ((mic.confidence >= 0) & (mic.confidence <= 1)).all()
    assert counts["read"] > 200 and counts["error"] > 200, counts


def test_fuzz_binary_mic(tmp_path):
    rng = np.random.default_rng(11)
    n = 5
    base = tmp_path / "base.bin"
    write_mic_binary(base, rng.uniform(-50, 50, n), rng.uniform(-50, 50, n), 2.5,
                     rng.choice([-1, 1], n), rng.uniform(0, 3, (n, 3)), rng.uniform(0, 1, n),
                     row=rng.integers(0, 100, n))
    raw = np.fromfile(base, dtype="<f8")
    path = tmp_path / "fuzz.bin"
    counts = {"read": 0, "error": 0}
    for case in range(N_CASES):
        values = raw.copy()
        k = int(rng.integers(0, values.size))
        values[k] = float(rng.choice([np.nan, np.inf, 300.0, -1.0, 1e300, 0.5, 2.0, 7.0]))
        blob = values.tobytes()
        if case % 5 == 0:
            blob = blob[: int(rng.integers(0, len(blob)))]
        path.write_bytes(blob)
        try:
            mic = read_mic_binary(path)
        except EXPECTED as exc:
            assert "fuzz.bin" in str(exc), (case, exc)
            counts["error"] += 1
            continue
        counts["read"] += 1
        assert np.isin(mic.ud, (-1, 0, 1)).all()
    assert counts["read"] > 100 and counts["error"] > 100, counts


@pytest.mark.parametrize("bad, pattern", [
    ("nan", r"bad.mic:5: column OrientationRowNr is nan"),
    ("300", r"bad.mic:5: column UpDown is 300.0, expected \+1"),
])
def test_mic_bad_values_named(tmp_path, bad, pattern):
    rng = np.random.default_rng(3)
    lines = _mic_text(rng, 2).splitlines()
    cells = lines[4].split("\t")
    cells[0 if "nan" in pattern else 6] = bad
    lines[4] = "\t".join(cells)
    (tmp_path / "bad.mic").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=pattern):
        read_mic(tmp_path / "bad.mic")
