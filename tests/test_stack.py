"""integrate_stack: bit-identical results serially, with threads and on a dask LocalCluster of
2 worker processes, from bitshuffle-LZ4 HDF5 and a CBF series; resume; bad input; NeXus."""
import concurrent.futures
import json
import os
import threading
import time

import h5py
import numpy as np
import pytest

from xreduce.detectors import Detector
from xreduce.geometry import Geometry
from xreduce.integrator import AzimuthalIntegrator
from xreduce.io.chunk_log import ChunkLog
from xreduce.stack import StackIntegrationError, integrate_stack, sinogram

hdf5plugin = pytest.importorskip("hdf5plugin")
fabio = pytest.importorskip("fabio")

N_FRAMES, SHAPE, NPT = 500, (64, 64), 50


def make_ai():
    det = Detector(172e-6, 172e-6, SHAPE, name="test64")
    return AzimuthalIntegrator(Geometry(0.05, 30 * 172e-6, 28 * 172e-6, 0.02, -0.01, 0.0,
                                        1e-10, det))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """500 Poisson frames as bitshuffle-LZ4 HDF5 (chunks of 10 frames) and as CBF files."""
    folder = tmp_path_factory.mktemp("stack")
    rng = np.random.default_rng(7)
    frames = rng.poisson(50, size=(N_FRAMES,) + SHAPE).astype(np.int32)
    h5path = str(folder / "scan.h5")
    with h5py.File(h5path, "w") as h5:
        h5.create_dataset("/entry/data/data", data=frames, chunks=(10,) + SHAPE,
                          **hdf5plugin.Bitshuffle(cname="lz4"))
    cbf = folder / "cbf"
    cbf.mkdir()
    for i, frame in enumerate(frames):
        fabio.cbfimage.CbfImage(data=frame).write(str(cbf / f"frame_{i:05d}.cbf"))
    ai = make_ai()
    # integrate_stack's default method for 1D (csc); the csr method agrees to ~1e-15
    reference = ai.integrate1d(frames, NPT, unit="q_nm^-1", error_model="poisson",
                               method=("bbox", "csc", "cython"))
    return {"frames": frames, "h5": f"{h5path}::/entry/data/data",
            "cbf": str(cbf / "frame_%05d.cbf"), "folder": folder, "reference": reference}


def read_output(path):
    with h5py.File(path, "r") as h5:
        group = h5["/entry/integrated"]
        return group["intensity"][()], group["intensity_errors"][()]


def check_identical(path, data):
    intensity, sigma = read_output(path)
    assert np.array_equal(intensity, data["reference"].intensity, equal_nan=True)
    assert np.array_equal(sigma, data["reference"].sigma, equal_nan=True)


@pytest.mark.parametrize("source", ["h5", "cbf"])
def test_serial_and_threads_bit_identical(data, tmp_path, source):
    out = tmp_path / "serial.h5"
    report = integrate_stack(data[source], make_ai(), NPT, out, error_model="poisson",
                             chunk_frames=40, progress=False)
    assert report.frames == N_FRAMES and report.chunks == 13
    assert report.frames_computed == N_FRAMES and report.frames_per_s > 0
    check_identical(out, data)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        integrate_stack(data[source], make_ai(), NPT, tmp_path / "threads.h5",
                        error_model="poisson", chunk_frames=25, executor=pool,
                        num_threads=1, progress=False)
    check_identical(tmp_path / "threads.h5", data)
    assert not os.path.exists(tmp_path / ".serial.h5.parts")  # the record is cleaned up


def test_output_is_nexus_with_provenance(data, tmp_path):
    silx_nxdata = pytest.importorskip("silx.io.nxdata")
    out = tmp_path / "out.h5"
    integrate_stack(data["h5"], make_ai(), NPT, out, error_model="poisson", progress=False)
    with h5py.File(out, "r") as h5:
        nxdata = silx_nxdata.get_default(h5)
        assert nxdata is not None and nxdata.is_valid
        assert nxdata.signal.shape == (N_FRAMES, NPT)
        assert h5["/entry/integrated/q"].attrs["units"] == "1/nm"
        process = h5["/entry/process"]
        assert process.attrs["NX_class"] == "NXprocess"
        config = json.loads(process["configuration"][()])
        assert config["npt"] == NPT and config["options"]["error_model"] == "poisson"
        assert "poni1" in process["poni"][()].decode().lower().replace(" ", "")


def test_dask_local_cluster_bit_identical_and_survives_a_killed_worker(data, tmp_path):
    """A real LocalCluster of 2 worker processes: same bits as serial; then one worker is
    killed mid-run (SIGKILL) and the job still integrates every frame exactly once."""
    pytest.importorskip("distributed")
    import signal

    from xreduce.executors import open_cluster

    with open_cluster(workers=2) as client:
        for source in ("h5", "cbf"):
            out = tmp_path / f"dask_{source}.h5"
            integrate_stack(data[source], make_ai(), NPT, out, error_model="poisson",
                            chunk_frames=50, executor=client, progress=False)
            check_identical(out, data)

        out = tmp_path / "killed.h5"
        parts = tmp_path / ".killed.h5.parts"
        outcome = {}

        def run():
            try:
                outcome["report"] = integrate_stack(
                    data["h5"], make_ai(), NPT, out, error_model="poisson", chunk_frames=5,
                    executor=client, progress=False)
            except BaseException as exc:  # reported below
                outcome["error"] = exc

        pids = list(client.run(os.getpid).values())
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _finished_chunks(parts) < 5:
            time.sleep(0.005)
        finished_before_kill = _finished_chunks(parts)
        os.kill(pids[0], signal.SIGKILL)
        thread.join(90)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert finished_before_kill < N_FRAMES // 5 // 2  # the kill came mid-run
        check_identical(out, data)


def _finished_chunks(parts) -> int:
    """Chunks whose results are recorded (whole records) in a run's folder."""
    return len(ChunkLog(parts).chunks()) if parts.is_dir() else 0


def test_sigkill_and_resume_gives_the_same_file(data, tmp_path):
    """A CLI run killed with SIGKILL, then resumed: same data and provenance as one
    uninterrupted run (the date aside)."""
    import signal
    import subprocess
    import sys

    from xreduce.poni import write_poni

    poni = tmp_path / "g.poni"
    write_poni(make_ai().geometry, poni)
    out = tmp_path / "resumed.h5"
    parts = tmp_path / ".resumed.h5.parts"
    args = [sys.executable, "-m", "xreduce.cli.integrate", data["h5"], "--poni", str(poni),
            "--npt", str(NPT), "--error-model", "poisson", "--chunk-frames", "1",
            "--threads", "1", "--no-progress"]
    killed = False
    for _ in range(3):  # the kill must land mid-run; retry if the run was too quick
        proc = subprocess.Popen(args + ["-o", str(out)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _finished_chunks(parts) >= 20:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(30)
        if proc.returncode == -signal.SIGKILL:
            killed = True
            break
    assert killed and not out.exists(), proc.stderr.read().decode()
    done = _finished_chunks(parts)
    assert 0 < done < N_FRAMES
    result = subprocess.run(args + ["-o", str(out), "--resume"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{done} resumed" in result.stdout
    whole = tmp_path / "whole.h5"
    assert subprocess.run(args + ["-o", str(whole)], timeout=120).returncode == 0
    check_identical(out, data)
    with h5py.File(out) as a, h5py.File(whole) as b:
        for name in ("configuration", "poni", "input", "program", "version"):
            assert a["/entry/process"][name][()] == b["/entry/process"][name][()]
        assert np.array_equal(a["/entry/integrated/count"][()], b["/entry/integrated/count"][()])


def test_bad_frame_in_a_series_names_it_and_resume_finishes(data, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(60):
        frame = data["frames"][i] if i != 37 else np.zeros((64, 60), np.int32)
        fabio.cbfimage.CbfImage(data=frame).write(str(folder / f"f_{i:03d}.cbf"))
    out = tmp_path / "series.h5"
    kwargs = dict(error_model="poisson", chunk_frames=10, progress=False)
    with pytest.raises(StackIntegrationError, match=r"frames 30-39.*f_037\.cbf") as info:
        integrate_stack(str(folder / "f_%03d.cbf"), make_ai(), NPT, out, **kwargs)
    assert info.value.failed[0][:2] == (30, 40)
    assert not out.exists()
    assert _finished_chunks(tmp_path / ".series.h5.parts") == 5
    with pytest.raises(ValueError, match="resume: .*other options.*npt"):
        integrate_stack(str(folder / "f_%03d.cbf"), make_ai(), NPT + 1, out, resume=True,
                        **kwargs)
    # the broken file replaced: resume redoes only its chunk
    fabio.cbfimage.CbfImage(data=data["frames"][37]).write(str(folder / "f_037.cbf"))
    report = integrate_stack(str(folder / "f_%03d.cbf"), make_ai(), NPT, out, resume=True,
                             **kwargs)
    assert (report.chunks_computed, report.chunks_resumed) == (1, 5)
    intensity, _ = read_output(out)
    assert np.array_equal(intensity, data["reference"].intensity[:60], equal_nan=True)


class InterruptAfter(concurrent.futures.ThreadPoolExecutor):
    """An executor that behaves like Ctrl-C after some tasks were submitted."""

    def __init__(self, tasks):
        super().__init__(1)
        self.left = tasks

    def submit(self, *args, **kwargs):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().submit(*args, **kwargs)


def test_interrupted_run_resumes_only_missing_chunks(data, tmp_path):
    out = tmp_path / "r.h5"
    kwargs = dict(error_model="poisson", chunk_frames=50, progress=False)
    with InterruptAfter(6) as pool, pytest.raises(KeyboardInterrupt):
        integrate_stack(data["h5"], make_ai(), NPT, out, executor=pool, **kwargs)
    kept = _finished_chunks(tmp_path / ".r.h5.parts")
    assert 0 < kept < 10 and not out.exists()
    h5file = data["h5"].split("::")[0]
    stat = os.stat(h5file)
    os.utime(h5file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "another" file
    try:
        with pytest.raises(ValueError, match="resume: .*other input.*mtime_ns"):
            integrate_stack(data["h5"], make_ai(), NPT, out, resume=True, **kwargs)
    finally:
        os.utime(h5file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = integrate_stack(data["h5"], make_ai(), NPT, out, resume=True, **kwargs)
    assert report.chunks_resumed == kept and report.chunks_computed == 10 - kept
    check_identical(out, data)


def test_bad_input_is_refused_before_work(data, tmp_path):
    out = tmp_path / "o.h5"
    with pytest.raises(FileNotFoundError, match="missing"):
        integrate_stack(str(tmp_path / "missing.h5") + "::/d", make_ai(), NPT, out)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="corrupt.h5"):
        integrate_stack(f"{corrupt}::/d", make_ai(), NPT, out)
    other = AzimuthalIntegrator(Geometry(0.1, 0.01, 0.01, 0, 0, 0, 1e-10,
                                         Detector(172e-6, 172e-6, (195, 487), name="Pilatus100k")))
    with pytest.raises(ValueError, match=r"shape \(64, 64\).*Pilatus100k.*\(195, 487\)"):
        integrate_stack(data["h5"], other, NPT, out)
    with pytest.raises(ValueError, match="scan: 7 rotations"):
        integrate_stack(data["h5"], make_ai(), NPT, out, scan=(7, 10))
    with pytest.raises(ValueError, match="output"):
        integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "o.txt")
    with pytest.raises(ValueError, match="mask"):
        integrate_stack(data["h5"], make_ai(), NPT, out, mask=np.zeros((3, 3)))
    assert not out.exists()


def test_unreachable_scheduler_fails_fast():
    pytest.importorskip("distributed")
    from xreduce.executors import open_cluster

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="tcp://127.0.0.1:1"):
        with open_cluster(scheduler="tcp://127.0.0.1:1", timeout_s=3):
            pass
    assert time.monotonic() - started < 10


def test_xrdct_sinogram_and_preview(data, tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    out = tmp_path / "ct.h5"
    report = integrate_stack(data["h5"], make_ai(), NPT, out, error_model="poisson",
                             scan=(20, 25), zigzag=True, preview=[10.0, 20.0], progress=False)
    assert report.previews and open(report.previews[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with h5py.File(out) as h5:
        assert h5["/entry"].attrs["default"] == "sinogram"
        cube = h5["/entry/sinogram/intensity"][()]
        assert cube.shape == (20, 25, NPT)
        expected = data["reference"].intensity.reshape(20, 25, NPT).copy()
        expected[1::2] = expected[1::2, ::-1]
        assert np.array_equal(cube, expected, equal_nan=True)
        assert h5["/entry/sinogram/rotation_angle"].attrs["units"] == "degrees"
    # chunks of 10 frames across lines of 25, finished out of order by a thread pool: the
    # rows written while the run goes land in the same cube
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "ct10.h5", error_model="poisson",
                        scan=(20, 25), zigzag=True, chunk_frames=10, executor=pool,
                        progress=False)
    with h5py.File(tmp_path / "ct10.h5") as h5:
        assert np.array_equal(h5["/entry/sinogram/intensity"][()], expected, equal_nan=True)
        assert np.array_equal(h5["/entry/integrated/intensity"][()],
                              data["reference"].intensity, equal_nan=True)


def test_sinogram_zigzag_rule():
    frames = np.arange(12)[:, None]
    cube = sinogram(frames, (3, 4), zigzag=True)[..., 0]
    np.testing.assert_array_equal(cube, [[0, 1, 2, 3], [7, 6, 5, 4], [8, 9, 10, 11]])
    np.testing.assert_array_equal(sinogram(frames, (3, 4))[..., 0], np.arange(12).reshape(3, 4))


def test_2d_and_saved_engine(data, tmp_path):
    """2D cakes through the stack path, and workers loading a saved matrix, give the
    integrator's own results bit for bit."""
    source = data["h5"] + "[0:30]"
    ai = make_ai()
    ref = ai.integrate2d(data["frames"][:30], NPT, 36, unit="2th_deg", error_model="poisson")
    out = tmp_path / "cake.h5"
    integrate_stack(source, make_ai(), NPT, out, npt_azim=36, unit="2th_deg",
                    error_model="poisson", chunk_frames=7, progress=False)
    with h5py.File(out) as h5:
        group = h5["/entry/integrated"]
        assert list(group.attrs["axes"]) == ["frame", "chi", "2theta"]
        assert np.array_equal(group["intensity"][()], ref.intensity, equal_nan=True)
        assert np.array_equal(group["chi"][()], ref.azimuthal)
    ai.save_engine(str(tmp_path / "engine.h5"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        integrate_stack(source, make_ai(), NPT, tmp_path / "engine_out.h5", npt_azim=36,
                        unit="2th_deg", error_model="poisson", chunk_frames=7, executor=pool,
                        engine_file=str(tmp_path / "engine.h5"), progress=False)
    with h5py.File(tmp_path / "engine_out.h5") as h5:
        assert np.array_equal(h5["/entry/integrated/intensity"][()], ref.intensity,
                              equal_nan=True)
    other = AzimuthalIntegrator(Geometry(0.06, 30 * 172e-6, 28 * 172e-6, 0.02, -0.01, 0.0,
                                         1e-10, make_ai().detector))
    with pytest.raises(ValueError, match="engine_file: .* another geometry"):
        integrate_stack(source, other, NPT, tmp_path / "x.h5", npt_azim=36, unit="2th_deg",
                        engine_file=str(tmp_path / "engine.h5"), progress=False)


def test_local_run_closes_its_files(data, tmp_path):
    from xreduce import executors

    integrate_stack(data["h5"] + "[0:20]", make_ai(), NPT, tmp_path / "c.h5", progress=False)
    assert not executors._STATES


def test_input_record_sees_frames_rewritten_in_place(tmp_path):
    """The input checksum of a stack read by direct chunk reads hashes the stored chunks of
    the sampled frames: frames rewritten with other values under the same name and
    modification time are another input; the same values are the same input."""
    from xreduce.io import open_stack
    from xreduce.stack import _input_record

    frames = np.random.default_rng(3).poisson(5, (6, 16, 16)).astype(np.int32)
    path = tmp_path / "s.h5"

    def write(values):
        with h5py.File(path, "w") as h5:
            h5.create_dataset("d", data=values, chunks=(2, 16, 16),
                              **hdf5plugin.Bitshuffle(cname="lz4"))
        os.utime(path, ns=(10**18, 10**18))

    records = []
    for values in (frames, frames, frames[::-1]):
        write(values)
        with open_stack(f"{path}::/d") as stack:
            assert stack.direct_chunks
            records.append(_input_record(stack))
    assert records[0] == records[1]
    assert records[2]["sample_sha256"] != records[0]["sample_sha256"]
    assert records[2]["files"][0]["mtime_ns"] == records[0]["files"][0]["mtime_ns"]


def test_opencl_integration_decompresses_in_the_reader_threads(data, tmp_path, monkeypatch):
    """With the integration on an OpenCL device (PoCL in CI), the compressed chunks are
    decompressed in the reader threads, overlapping the device's work, and the results equal
    the host's within the OpenCL engine's tolerance (1e-5: float32 products, see
    test_opencl_integrate.py); with the integration on the host they are decompressed by the
    calling thread."""
    from opencl_helpers import require_opencl_context

    from xreduce.io.chunks import RawChunks

    require_opencl_context()
    threads = []
    original = RawChunks.decompress_into

    def spy(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RawChunks, "decompress_into", spy)
    kwargs = dict(error_model="poisson", chunk_frames=50, progress=False)
    out = tmp_path / "ocl.h5"
    integrate_stack(data["h5"], make_ai(), NPT, out, method=("bbox", "csr", "opencl"), **kwargs)
    assert len(threads) == 10 and all(name.startswith("xreduce-read") for name in threads)
    intensity, sigma = read_output(out)
    np.testing.assert_allclose(intensity, data["reference"].intensity, rtol=1e-5)
    np.testing.assert_allclose(sigma, data["reference"].sigma, rtol=1e-5)
    threads.clear()
    integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "host.h5",
                    method=("bbox", "csr", "cython"), **kwargs)
    assert threads == [threading.current_thread().name] * 10


def test_nexus_output_is_written_while_the_run_goes(data, tmp_path, monkeypatch):
    """A NeXus output holds no more than the chunks in flight: a stack whose results exceed
    the memory allowed (here 300 kB, the results 600 kB) integrates in chunks that fit, into
    the same file as without the limit; the text output, assembled in memory, is refused."""
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(300_000))
    kwargs = dict(error_model="poisson", chunk_frames=10, progress=False)
    integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "small.h5", **kwargs)
    check_identical(tmp_path / "small.h5", data)
    with pytest.raises(MemoryError, match="npt"):
        integrate_stack(data["h5"], make_ai(), NPT, str(tmp_path / "f_%05d.dat"), **kwargs)


def test_a_failed_write_stops_the_run(data, tmp_path, monkeypatch):
    """A write that fails (a full disk) stops the run with its error, no output in place;
    the chunks recorded before it are kept for a resume, which finishes the file."""
    real = ChunkLog.append
    calls = {"n": 0}

    def failing(self, chunk, result):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real(self, chunk, result)

    monkeypatch.setattr(ChunkLog, "append", failing)
    out = tmp_path / "full.h5"
    kwargs = dict(error_model="poisson", chunk_frames=10, progress=False)
    with pytest.raises(OSError, match="No space"):
        integrate_stack(data["h5"], make_ai(), NPT, out, **kwargs)
    assert not out.exists()
    monkeypatch.setattr(ChunkLog, "append", real)
    report = integrate_stack(data["h5"], make_ai(), NPT, out, resume=True, **kwargs)
    assert report.chunks_resumed >= 2
    check_identical(out, data)


@pytest.mark.parametrize("compression, filter_id", [("bitshuffle-lz4", 32008), ("gzip", 1),
                                                   (None, None)])
def test_output_compression(data, tmp_path, compression, filter_id):
    """The NeXus output's datasets carry the chosen filter and read back the same values;
    an unknown compression is refused before any work."""
    out = tmp_path / "c.h5"
    integrate_stack(data["h5"], make_ai(), NPT, out, error_model="poisson", chunk_frames=100,
                    compression=compression, progress=False)
    check_identical(out, data)
    with h5py.File(out) as h5:
        for name in ("intensity", "intensity_errors", "count"):
            plist = h5["/entry/integrated"][name].id.get_create_plist()
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
            assert (filter_id in filters) if filter_id else filters == []
    with pytest.raises(ValueError, match="compression: expected one of"):
        integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "x.h5", compression="zstd",
                        progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_one_reader_for_raw_reads_and_default_chunks_by_memory_held(data, tmp_path,
                                                                   monkeypatch):
    """Direct chunk reads are I/O only: one reader thread keeps ahead. With the csc method
    the compressed chunks go to the integration, so the default chunks are sized by their
    stored bytes (many more frames than by the decoded frames); same results either way."""
    import xreduce.executors as executors
    import xreduce.stack as stack_module

    readers = []
    real_load = stack_module._IntegrateJob.load

    def load(self, state, chunk):
        readers.append(threading.current_thread().name)
        return real_load(self, state, chunk)

    monkeypatch.setattr(stack_module._IntegrateJob, "load", load)
    monkeypatch.setattr(stack_module, "_CHUNK_BYTES", 10 * 64 * 60 * 4)  # 10 decoded frames
    kwargs = dict(error_model="poisson", progress=False)
    csr = integrate_stack(data["h5"], make_ai(), NPT, tmp_path / "csr.h5", **kwargs)
    assert csr.chunk_frames == 10 and len(set(readers)) == 1
    with h5py.File(tmp_path / "ones.h5", "w") as h5:  # one frame a chunk, as detectors write
        h5.create_dataset("d", data=data["frames"][:100], chunks=(1,) + SHAPE,
                          **hdf5plugin.Bitshuffle(cname="lz4"))
    csc = integrate_stack(f"{tmp_path}/ones.h5::/d", make_ai(), NPT, tmp_path / "csc.h5",
                          method="bbox_csc", **kwargs)
    assert csc.chunk_frames > 20 and csc.chunk_frames % 2 == 0
    readers.clear()
    integrate_stack(data["cbf"], make_ai(), NPT, tmp_path / "cbf.h5", chunk_frames=10, **kwargs)
    assert len(set(readers)) == executors.LOCAL_READERS  # decoding readers: two
    check_identical(tmp_path / "cbf.h5", data)
    a, _ = read_output(tmp_path / "csc.h5")
    np.testing.assert_allclose(a, data["reference"].intensity[:100], rtol=1e-12)


def test_default_method_is_csc_where_it_applies(data, tmp_path):
    """Without a method: csc for 1D (the fastest on stacks), csr for what csc does not do
    (2D, the azimuthal error model, pixels wider than its 8-bin window); the method used is
    in the provenance, and an explicit method is kept."""
    def method_of(out):
        with h5py.File(out) as h5:
            return json.loads(h5["/entry/process/configuration"][()])["options"]["method"]

    source = data["h5"] + "[0:20]"
    cases = {"1d": ({}, "csc"), "2d": ({"npt_azim": 8}, "csr"),
             "azimuthal": ({"error_model": "azimuthal"}, "csr"),
             "wide": ({"npt": 3000}, "csr"),  # 3000 bins: a pixel covers more than 8
             "explicit": ({"method": ("bbox", "csr", "cython")}, "csr")}
    for name, (kwargs, expected) in cases.items():
        out = tmp_path / f"{name}.h5"
        integrate_stack(source, make_ai(), kwargs.pop("npt", NPT), out, progress=False,
                        **kwargs)
        assert method_of(out) == ["bbox", expected, "cython"], name
    with pytest.raises(ValueError, match="a pixel covers"):
        make_ai().integrate1d(data["frames"][0], 3000, method="bbox_csc")


def test_bad_first_frame_is_named_by_its_chunk(data, tmp_path):
    """The default method is tried on the first frame; a damaged first chunk does not stop the
    run there: its chunk fails, named, and the other chunks are integrated and kept."""
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("d", data=data["frames"][:20], chunks=(5,) + SHAPE,
                               **hdf5plugin.Bitshuffle(cname="lz4"))
        offset = ds.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 12)
        handle.write(b"\xff" * 40)
    out = tmp_path / "first.h5"
    with pytest.raises(StackIntegrationError, match=r"frames 0-4.*damaged") as info:
        integrate_stack(f"{path}::/d", make_ai(), NPT, out, error_model="poisson",
                        chunk_frames=5, progress=False)
    assert [f[:2] for f in info.value.failed] == [(0, 5)]
    assert _finished_chunks(tmp_path / ".first.h5.parts") == 3
