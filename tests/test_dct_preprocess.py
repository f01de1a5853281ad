"""DCT preprocessing: synthetic rotation series, chunking, resume, configuration, command line.

Tolerances: the noise-free synthetic stack is stored as float32, so the normalised background
is constant over frames only to float32 rounding: the recovered spots are compared with
atol = 1e-2, i.e. 7e-6 of the raw level (~1400 counts, float32 spacing 1.2e-4) after the
rounding of storage, subtraction and scaling. The chunked pipeline is compared bitwise
with the same steps applied to the whole stack in memory, and interrupted-then-resumed output
bitwise with an uninterrupted run.
"""
import dataclasses

import h5py
import numpy as np
import pytest
import yaml

from xreduce.cli.dct import TEMPLATE, main
from xreduce.dct import preprocess
from xreduce.dct.config import ConfigError, load_section
from xreduce.io import partial_path
from xreduce.median import median_filter2d, moving_median

SHAPE = (60, 20, 24)
MARGIN = [[0, 0], [3, 24]]  # the top rows: beam, no sample, no spots


def synthetic_dct(rng, noise=0.0):
    """Raw frames = dark + beam profile * drifting intensity + short-lived spots (+ noise).

    Returns raw (float32), dark frames, the intensity I(t) and the spots alone (float64).
    """
    n, rows, cols = SHAPE
    r, c = np.mgrid[0:rows, 0:cols]
    beam = 1000.0 * np.exp(-((c - cols / 2) / (0.6 * cols)) ** 2)[None]  # wide beam profile
    intensity = 1.0 + 0.3 * np.sin(2 * np.pi * np.arange(n) / n)  # drifts by +-30 %
    dark = 100.0 + 5.0 * (r % 4 == 0)  # a pattern, like sensor rows
    spots = np.zeros(SHAPE)
    for t0, r0, c0 in [(5, 8, 6), (20, 12, 15), (35, 17, 20), (50, 15, 9), (55, 9, 19)]:
        blob = 500.0 * np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / 2.0)
        spots[t0: t0 + 4] += blob  # 4 frames < window / 2: the median ignores them
    raw = dark[None] + beam * intensity[:, None, None] + spots
    if noise:
        raw = raw + rng.normal(0, noise, size=raw.shape)
    darks = np.repeat(dark[None], 3, axis=0).astype(np.float32)
    return raw.astype(np.float32), darks, intensity, spots


def write_inputs(tmp_path, raw, darks):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5["/entry/data"] = raw
        h5["/entry/dark"] = darks
    return f"{path}::/entry/data", f"{path}::/entry/dark"


def make_config(tmp_path, rng, noise=0.0, **preprocess_keys):
    raw, darks, intensity, spots = synthetic_dct(rng, noise)
    data_url, dark_url = write_inputs(tmp_path, raw, darks)
    section = {"input": data_url, "output": str(tmp_path / "out.h5"), "dark": dark_url,
               "normalization": "margin", "margin_bbox": MARGIN,
               "moving_median": {"window": 15}, "median_filter": {"size": None},
               "chunk_frames": 7}
    section.update(preprocess_keys)
    return {"preprocess": section}, raw, darks, intensity, spots


def read_output(path, name="preprocessed"):
    with h5py.File(path) as h5:
        return h5[f"/entry/{name}/data"][()]


def test_background_free_spots(tmp_path, rng):
    """Noise-free: the output is the spots, scaled by I(0)/I(t) by the normalisation."""
    config, raw, darks, intensity, spots = make_config(tmp_path, rng)
    result = preprocess(config, progress=False)
    assert result.chunks_computed == result.chunks_total == 9
    expected = spots * (intensity[0] / intensity)[:, None, None]
    np.testing.assert_allclose(read_output(result.output), expected, atol=1e-2, rtol=0)


def test_noisy_stack_statistics(tmp_path, rng):
    """With Gaussian noise (sigma 2 counts, ~0.2 %): background-only pixels scatter around 0
    with about the noise level, and each spot's integral (pixels above 20 counts) is that of
    the noise-free spot after the same 3x3 median filter within 3 % (seeded noise: 1.5-2.5 %
    low, as the median of noisy spot pixels is biased by the noisy background estimate)."""
    config, raw, darks, intensity, spots = make_config(tmp_path, rng, noise=2.0,
                                                       median_filter={"size": 3})
    out = read_output(preprocess(config, progress=False).output)
    quiet = spots < 1e-3
    assert abs(out[quiet].mean()) < 0.3
    assert 0.5 < out[quiet].std() < 3.0
    expected = median_filter2d(spots * (intensity[0] / intensity)[:, None, None], 3)
    for t in (5, 20, 35):
        spot = expected[t] > 20
        assert out[t][spot].sum() == pytest.approx(expected[t][spot].sum(), rel=0.03)


def test_chunked_equals_whole_stack_in_memory(tmp_path, rng):
    """Chunks of 7 frames, step 3 with linear interpolation, wrap edges, 3x3 filter and the
    saved background: bitwise equal to the public functions applied to the whole stack."""
    config, raw, darks, _, _ = make_config(
        tmp_path, rng, noise=1.0, offset=2.5, save_background=True,
        moving_median={"window": 10, "mode": "wrap", "step": 3, "interpolation": "linear"},
        median_filter={"size": 3, "mode": "nearest"})
    result = preprocess(config, progress=False)
    corrected = raw - darks.mean(axis=0, dtype=np.float64).astype(np.float32)
    corrected -= np.float32(2.5)
    (r0, c0), (r1, c1) = MARGIN
    means = corrected[:, r0:r1, c0:c1].mean(axis=(1, 2), dtype=np.float64)
    corrected *= (means[0] / means).astype(np.float32)[:, None, None]
    background = moving_median(corrected, 10, mode="wrap", step=3, interpolation="linear")
    expected = median_filter2d(corrected - background, 3, mode="nearest")
    np.testing.assert_array_equal(read_output(result.output, "background"), background)
    np.testing.assert_array_equal(read_output(result.output), expected)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float64, np.int64])
def test_input_dtypes_chunked_equal_whole_stack(tmp_path, rng, dtype):
    """Integer and float inputs (uint16, int32 and float64 go through the fused compiled
    correction, int64 through NumPy), step 1 (background subtracted in place), 3x3 filter:
    bitwise equal to the NumPy steps on the whole stack."""
    raw, darks, _, _ = synthetic_dct(rng, noise=3.0)
    raw = np.round(raw).astype(dtype)
    data_url, dark_url = write_inputs(tmp_path, raw, darks)
    config = {"preprocess": {
        "input": data_url, "output": str(tmp_path / "out.h5"), "dark": dark_url,
        "offset": 2.5, "normalization": "margin", "margin_bbox": [[4, 2], [9, 20]],
        "moving_median": {"window": 9}, "median_filter": {"size": 3}, "chunk_frames": 7}}
    result = preprocess(config, progress=False)
    corrected = np.subtract(raw, darks.mean(axis=0, dtype=np.float64).astype(np.float32),
                            dtype=np.float32)
    corrected -= np.float32(2.5)
    means = corrected[:, 4:9, 2:20].mean(axis=(1, 2), dtype=np.float64)
    corrected *= (means[0] / means).astype(np.float32)[:, None, None]
    expected = median_filter2d(corrected - moving_median(corrected, 9, mode="nearest"), 3)
    np.testing.assert_array_equal(read_output(result.output), expected)


def test_interrupted_run_resumes_to_identical_file(tmp_path, rng):
    config, *_ = make_config(tmp_path, rng, noise=1.0, save_background=True,
                             median_filter={"size": 5})
    reference = preprocess(dict(config, preprocess=dict(config["preprocess"],
                                output=str(tmp_path / "ref.h5"))), progress=False)

    def stop_after_third(index, first, stop):
        if index == 2:
            raise KeyboardInterrupt("simulated interruption")

    output = config["preprocess"]["output"]
    with pytest.raises(KeyboardInterrupt):
        preprocess(config, progress=False, on_chunk=stop_after_third)
    assert not (tmp_path / "out.h5").exists()
    with h5py.File(partial_path(output)) as h5:
        np.testing.assert_array_equal(h5["/entry/process/chunk_done"][()],
                                      [1, 1, 1, 0, 0, 0, 0, 0, 0])
    seen = []
    resumed = dict(config, preprocess=dict(config["preprocess"], num_threads=1))  # no effect
    result = preprocess(resumed, progress=False, on_chunk=lambda i, a, b: seen.append(i))
    assert seen == [3, 4, 5, 6, 7, 8]
    assert (result.chunks_computed, result.chunks_skipped) == (6, 3)
    with h5py.File(output) as got, h5py.File(reference.output) as ref:
        for name in ("preprocessed", "background"):
            np.testing.assert_array_equal(got[f"/entry/{name}/data"][()],
                                          ref[f"/entry/{name}/data"][()])
        for key in ("input", "version", "program", "chunk_frames"):
            assert got["/entry/process"].attrs[key] == ref["/entry/process"].attrs[key]
        got_cfg = load_section(got["/entry/process"].attrs["config"], "preprocess")
        ref_cfg = load_section(ref["/entry/process"].attrs["config"], "preprocess")
        assert got_cfg == dataclasses.replace(ref_cfg, output=output)  # only the name differs
        assert got["/entry/process"].attrs["config"] == ref["/entry/process"].attrs[
            "config"].replace(reference.output, output)
        assert "completed" in got["/entry/process"].attrs
    assert not (tmp_path / partial_path("out.h5")).exists()


def test_failed_write_stops_the_run_and_resumes(tmp_path, rng, monkeypatch):
    """A write that fails in the writer thread stops the run with its error; the chunks
    written before it are flagged done, and the next run completes an identical file."""
    import importlib

    # (the package attribute xreduce.dct.preprocess is the function: import the module)
    module = importlib.import_module("xreduce.dct.preprocess")
    config, *_ = make_config(tmp_path, rng, noise=1.0)
    reference = preprocess(dict(config, preprocess=dict(config["preprocess"],
                                output=str(tmp_path / "ref.h5"))), progress=False)
    write = module._write_frames
    calls = []

    def failing_write(dataset, first, frames):
        calls.append(first)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        write(dataset, first, frames)

    monkeypatch.setattr(module, "_write_frames", failing_write)
    with pytest.raises(OSError, match="disk full"):
        preprocess(config, progress=False)
    output = config["preprocess"]["output"]
    with h5py.File(partial_path(output)) as h5:
        np.testing.assert_array_equal(h5["/entry/process/chunk_done"][()],
                                      [1, 1, 1, 0, 0, 0, 0, 0, 0])
    monkeypatch.setattr(module, "_write_frames", write)
    result = preprocess(config, progress=False)
    assert (result.chunks_computed, result.chunks_skipped) == (6, 3)
    np.testing.assert_array_equal(read_output(output), read_output(reference.output))


def test_resume_with_other_config_refused_and_no_overwrite(tmp_path, rng):
    config, *_ = make_config(tmp_path, rng)

    def interrupt(index, first, stop):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(config, progress=False, on_chunk=interrupt)
    changed = dict(config, preprocess=dict(config["preprocess"], offset=1.0))
    with pytest.raises(ConfigError, match="different configuration"):
        preprocess(changed, progress=False)
    preprocess(config, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        preprocess(config, progress=False)
    again = dict(config, preprocess=dict(config["preprocess"], overwrite=True))
    assert preprocess(again, progress=False).chunks_computed == 9


def test_provenance_attributes(tmp_path, rng):
    config, *_ = make_config(tmp_path, rng)
    text = yaml.safe_dump(config)
    path = tmp_path / "config.yml"
    path.write_text(text)
    preprocess(str(path), progress=False)
    with h5py.File(config["preprocess"]["output"]) as h5:
        attrs = h5["/entry/process"].attrs
        assert attrs["config_source"] == text
        assert attrs["input"] == config["preprocess"]["input"]
        stored = load_section(attrs["config"], "preprocess")
        assert stored.moving_median.window == 15 and stored.median_filter.size is None
        assert h5["/entry"].attrs["NX_class"] == "NXentry"


@pytest.mark.parametrize("section, match", [
    ({"input": "a.h5::/d", "output": "o.h5", "windw": 3}, "unknown key.*windw.*valid keys"),
    ({"input": "a.h5::/d", "output": "o.h5", "moving_median": {"size": 3}},
     "preprocess.moving_median: unknown key.*size.*valid keys are: interpolation, mode"),
    ({"output": "o.h5"}, "missing required key.*input"),
    ({"input": "a.h5::/d", "output": "o.h5", "moving_median": {"window": 0}},
     "preprocess.moving_median.window"),
    ({"input": "a.h5::/d", "output": "o.h5", "normalization": "margin"},
     "preprocess.margin_bbox"),
    ({"input": "a.h5::/d", "output": "o.h5", "median_filter": {"size": [3, 3, 3]}},
     "preprocess.median_filter.size"),
    ({"input": "a.h5::/d", "output": "o.h5", "backend": "cuda"}, "preprocess.backend"),
])
def test_config_errors_name_the_key(section, match):
    with pytest.raises(ConfigError, match=match):
        load_section({"preprocess": section}, "preprocess")


def test_config_unknown_section_and_bad_yaml():
    with pytest.raises(ConfigError, match="unknown section.*preproces.*valid sections"):
        load_section("preproces: {input: a}", "preprocess")
    with pytest.raises(ConfigError, match="YAML"):
        load_section("preprocess: [unclosed", "preprocess")


def test_command_line(tmp_path, rng, capsys):
    config, *_ = make_config(tmp_path, rng)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["preprocess", str(path), "--no-progress"]) == 0
    assert "9 chunk(s) computed" in capsys.readouterr().out
    assert (tmp_path / "out.h5").exists()
    assert main(["preprocess", str(path), "--no-progress"]) == 2  # exists, no overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(["preprocess", "--template"]) == 0
    template = capsys.readouterr().out
    assert template == TEMPLATE
    assert load_section(template, "preprocess").moving_median.window == 31


def test_opencl_backend_gives_the_same_file(tmp_path, rng):
    from opencl_helpers import require_opencl_context

    require_opencl_context()
    config, *_ = make_config(tmp_path, rng, noise=1.0, median_filter={"size": 3})
    cython = read_output(preprocess(config, progress=False).output)
    other = dict(config["preprocess"], backend="opencl", output=str(tmp_path / "ocl.h5"))
    np.testing.assert_array_equal(read_output(preprocess({"preprocess": other},
                                                         progress=False).output), cython)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32,
                                   np.float32, np.float64])
def test_fused_correction_equals_numpy_steps(rng, dtype):
    """The compiled dark/offset/scale pass equals the NumPy steps bitwise, on a row range,
    with or without dark, offset and scale."""
    from xreduce.ext.frame_correction import correct_frames

    raw = (rng.random((3, 6, 7)) * 120).astype(dtype)
    dark = rng.normal(10, 3, (6, 7)).astype(np.float32)
    scale = rng.uniform(0.5, 2, 3).astype(np.float32)
    none = np.zeros(0, np.float32)
    for use_dark, offset, use_scale in [(True, 2.5, True), (False, 0.0, False),
                                        (True, 0.0, False), (False, -1.25, True)]:
        want = raw.astype(np.float32)
        if use_dark:
            want = np.subtract(raw, dark, dtype=np.float32)
        if offset:
            want -= np.float32(offset)
        if use_scale:
            want *= scale[:, None, None]
        out = np.full(raw.shape, np.nan, np.float32)
        correct_frames(raw, dark if use_dark else none.reshape(0, 0), offset,
                       scale if use_scale else none, out, 2, 5, 2)
        np.testing.assert_array_equal(out[:, 2:5], want[:, 2:5])
        assert np.isnan(out[:, :2]).all() and np.isnan(out[:, 5:]).all()
