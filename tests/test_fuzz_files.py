"""Seeded mutation fuzzing of the files the DCT steps read: YAML configurations (preprocess,
segment) and Fit2D spline files, 2000+ cases each (doc/robustness.md).

Every case must end either in a valid object or in a ValueError/TypeError/KeyError/OSError
(MemoryError from ``xreduce.limits`` for sizes) whose message names the file and the key or
line; nothing else (no IndexError, OverflowError, RecursionError, UnicodeDecodeError...), no
crash, and no allocation above 2 GiB: the peak traced memory of each case is measured with
:mod:`tracemalloc` (NumPy reports its buffers there). Accepted files are also pushed through
what a run checks next (thread counts, window, detector corners), under an allocation limit of
64 MB so that accepted absurd sizes are refused quickly rather than computed.
"""
import copy
import math
import tracemalloc

import numpy as np
import pytest
import yaml

from xreduce.cli.dct import TEMPLATE as PREPROCESS_TEMPLATE
from xreduce.dct.config import load_section
from xreduce.dct.segment_cli import TEMPLATE as SEGMENT_TEMPLATE
from xreduce.limits import check_num_threads
from xreduce.median import effective_window
from xreduce.spline import DistortionSpline, read_spline, spline_detector, write_spline

CASES = 2000
CLEAR = (ValueError, TypeError, KeyError, OSError, MemoryError)
PEAK_LIMIT = 2 * 2**30

ODD_VALUES = [None, True, False, -1, 0, 1, 2**31, 10**9, 10**30, -10**30, 1e308, -1e-308,
              math.nan, math.inf, -math.inf, "", "abc", "1e5", "../../etc/passwd", "\x00",
              "é" * 50, "x" * 5000, [], [1], [1, 2, 3], [[0, 0], [1e9, 1e9]], [[1]], [[]],
              {"a": 1}, {}, 3.5, -0.0, [None, None], [[-1, -1], [3, 3]], [2**63, 2**63],
              {"window": 10**9}, {"size": [10**6, 10**6]}]
TOKENS = [":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!python/object:os.system ", "\t", "#",
          "'", '"', "? ", "|", ">", "%YAML 1.1", "---", "...", "\x00", "\xff", "\u2028"]


def mutate_mapping(rng, data):
    """Replace, delete or add one key somewhere in nested mappings."""
    node = data
    while isinstance(node, dict):
        keys = list(node)
        if not keys:
            node["extra"] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
            return
        key = keys[rng.integers(len(keys))]
        if isinstance(node[key], dict) and rng.random() < 0.5:
            node = node[key]
            continue
        action = rng.integers(4)
        if action == 0:
            del node[key]
        elif action == 1:
            node[f"{key}_typo"] = node.pop(key)
        else:
            node[key] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
        return


def mutate_text(rng, text):
    """Byte-level damage: flips, insertions of YAML syntax, cuts, non-UTF-8 bytes."""
    raw = bytearray(text.encode("utf-8"))
    for _ in range(rng.integers(1, 4)):
        action = rng.integers(5)
        at = int(rng.integers(len(raw) + 1))
        if action == 0 and raw:
            raw[min(at, len(raw) - 1)] = int(rng.integers(256))
        elif action == 1:
            raw[at:at] = TOKENS[rng.integers(len(TOKENS))].encode("utf-8", "surrogatepass")
        elif action == 2:
            del raw[at:]
        elif action == 3:
            raw[at:at] = b"[" * int(rng.integers(1, 100))
        else:
            raw[at:at] = bytes(rng.integers(128, 256, 3, dtype=np.uint8))
    return bytes(raw)


def config_cases(template, section, rng):
    base = yaml.safe_load(template)
    for k in range(CASES):
        if k % 3 == 2:
            yield mutate_text(rng, template)
            continue
        data = copy.deepcopy(base)
        for _ in range(rng.integers(1, 4)):
            mutate_mapping(rng, data.get(section) if rng.random() < 0.9 else data)
        if k % 50 == 0:
            data = {"a": "&x [*x]"} if k % 100 == 0 else base
        yield yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                        allow_unicode=True).encode("utf-8")


def run_case(path, load, follow_up):
    """Run one case: the outcome ('ok' or the exception), its message and the peak traced
    memory."""
    tracemalloc.reset_peak()
    try:
        follow_up(load(path))
        outcome, message = "ok", ""
    except CLEAR as exc:
        outcome, message = type(exc).__name__, str(exc)
    peak = tracemalloc.get_traced_memory()[1]
    return outcome, message, peak


@pytest.fixture
def traced(monkeypatch):
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(64 * 2**20))
    tracemalloc.start()
    yield
    tracemalloc.stop()


def check_preprocess(cfg):
    check_num_threads(cfg.num_threads, "preprocess.num_threads")
    if cfg.moving_median.window is not None:
        effective_window(cfg.moving_median.window, 3600, cfg.moving_median.mode,
                         "preprocess.moving_median.window")


def check_segment(cfg):
    check_num_threads(cfg.num_threads, "segment.num_threads")


@pytest.mark.parametrize("section, template, follow_up", [
    ("preprocess", PREPROCESS_TEMPLATE, check_preprocess),
    ("segment", SEGMENT_TEMPLATE, check_segment),
], ids=["preprocess", "segment"])
def test_fuzzed_yaml_configs(tmp_path, traced, section, template, follow_up):
    """2000 mutated configurations per section: valid, or a clear error naming the file and
    the key (or 'config' for the document itself); no allocation above 2 GiB."""
    rng = np.random.default_rng(16)
    path = tmp_path / f"{section}.yml"
    outcomes = {}
    for case in config_cases(template, section, rng):
        path.write_bytes(case)
        with _no_warning_check():
            outcome, message, peak = run_case(str(path), lambda p: load_section(p, section),
                                              follow_up)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert peak < PEAK_LIMIT, (case, peak)
        if outcome != "ok":
            assert str(path) in message or message.startswith(f"{section}."), (case, message)
            assert any(word in message for word in (f"{section}", "config")), (case, message)
    assert sum(outcomes.values()) == CASES
    assert outcomes.get("ok", 0) > 50 and outcomes.get("ConfigError", 0) > 500, outcomes


class _no_warning_check:
    """Thread counts above the cores warn (RuntimeWarning) and are capped: allowed here."""

    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings()
        self.catcher.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)


def valid_spline_text(tmp_path):
    knots = np.array([0.0] * 4 + [10.0, 20.0] + [30.0] * 4)
    rng = np.random.default_rng(1)
    spline = DistortionSpline(valid_region=(0.0, 0.0, 29.0, 29.0), grid_spacing=5.0,
                              pixel_size_um=(50.0, 50.0), x_knots=(knots, knots),
                              x_coefficients=rng.normal(0, 0.5, 36), y_knots=(knots, knots),
                              y_coefficients=rng.normal(0, 0.5, 36))
    write_spline(tmp_path / "valid.spline", spline)
    return (tmp_path / "valid.spline").read_text()


def mutate_spline(rng, text):
    lines = text.split("\n")
    for _ in range(rng.integers(1, 4)):
        if not lines:
            break
        n = int(rng.integers(len(lines)))
        action = rng.integers(6)
        if action == 0:                              # a number replaced
            field = int(rng.integers(5))
            value = rng.choice(["nan", "inf", "-inf", "1e308", "-1", "0", "1e6", "abc",
                                "1e20", "2147483648", "-1e9", "  "])
            line = lines[n].ljust(70)
            lines[n] = line[:14 * field] + f"{value:>14s}" + line[14 * field + 14:]
        elif action == 1:
            del lines[n]
        elif action == 2:
            lines.insert(n, lines[int(rng.integers(len(lines)))])
        elif action == 3:                            # knot counts
            lines[n] = f"{int(rng.choice([0, 4, 9, 10, 11, 10**9, -5])):6d}" \
                       f"{int(rng.choice([0, 10, 12, 10**6])):6d}"
        elif action == 4:
            lines = lines[:n]
        else:
            lines[n] = lines[n][:5] + "\udcff\x00é" + lines[n][5:]
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def test_fuzzed_spline_files(tmp_path, traced):
    """2000 mutated spline files: a detector, or a clear error naming the file (and the line
    for the content); no allocation above 2 GiB."""
    rng = np.random.default_rng(16)
    text = valid_spline_text(tmp_path)
    path = tmp_path / "fuzz.spline"
    outcomes = {}
    for _ in range(CASES):
        path.write_bytes(mutate_spline(rng, text))
        outcome, message, peak = run_case(str(path), read_spline, spline_detector)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert peak < PEAK_LIMIT, peak
        if outcome != "ok":
            assert str(path) in message or "spline valid region" in message, message
    assert outcomes.get("ok", 0) > 20 and outcomes.get("ValueError", 0) > 1000, outcomes
