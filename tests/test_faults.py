"""Fault injection on the DCT runs (doc/robustness.md): kill -9 at random moments, inputs
changed between runs, damaged partial files, planted links, concurrent runs, file modes.

The kills are made by a small fork server (a fresh Python that imports xreduce but runs no
kernel): for each kill it forks a child that runs ``xreduce-dct`` and sends it SIGKILL after a
random delay drawn over the length of an uninterrupted run, so kills land in every stage
(start, labelling, chunk writes, the final rename). After the kills of an episode the run is
completed and its data compared bitwise with an uninterrupted run.
"""
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import yaml

from xreduce.cli.dct import main
from xreduce.dct import preprocess
from xreduce.dct.partial_file import PartialFileError
from xreduce.dct.preprocess import RunChangedError
from xreduce.dct.segment import segment
from xreduce.dct.segment_cli import checkpoint_path, run_segment
from xreduce.io import atomic_output, partial_path
from xreduce.io.run_identity import RunLock, RunLockedError, lock_path

#: kill -9's per kind of run (preprocess, segment): >= 50 in all.
KILL_EPISODES, KILLS_PER_EPISODE = 5, 6


def write_stack(path, seed=0, n=40, shape=(24, 24), baseline=100.0):
    """A noisy stack with bright 3-frame spots."""
    rng = np.random.default_rng(seed)
    data = rng.normal(baseline, 1.0, (n,) + shape).astype(np.float32)
    for k in range(0, n - 3, 4):
        r, c = rng.integers(3, shape[0] - 3, 2)
        data[k:k + 3, r - 1:r + 2, c - 1:c + 2] += 80.0
    with h5py.File(path, "w") as h5:
        h5["/entry/data"] = data
    return data


def preprocess_config(folder, name="out.h5", **extra):
    section = {"input": f"{folder}/scan.h5::/entry/data", "output": f"{folder}/{name}",
               "chunk_frames": 4, "moving_median": {"window": 9},
               "median_filter": {"size": 3}, "num_threads": 1}
    section.update(extra)
    return {"preprocess": section}


def segment_config(folder, name="spots.h5", source="scan.h5::/entry/data", **extra):
    section = {"input": f"{folder}/{source}", "output": f"{folder}/{name}",
               "seed_threshold": 40.0, "tau": 0.3, "bb_max": [2, 3, 3], "chunk_frames": 3,
               "num_threads": 1, "compression": None}
    section.update(extra)
    return {"segment": section}


def write_yaml(path, config):
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)


def frames_of(path):
    with h5py.File(path, "r") as h5:
        return h5["/entry/preprocessed/data"][()].view(np.uint32)


def spots_of(path):
    with h5py.File(path, "r") as h5:
        return {name: h5[f"/difspots/{name}"][()] for name in ("voxels", "values", "offsets")}


SERVER = textwrap.dedent(r"""
    import json, os, random, signal, sys, time
    from xreduce.cli.dct import main      # imported once; the children only fork
    import h5py, tqdm.auto, xreduce.dct.preprocess, xreduce.dct.difspot, xreduce.median

    command, config, output, episodes, kills, seed = sys.argv[1:7]
    random.seed(int(seed))

    def run(delay=None):
        pid = os.fork()
        if pid == 0:
            if delay is not None:
                sys.stderr = open(os.devnull, "w")
            os._exit(main([command, "--no-progress", config]))
        start = time.perf_counter()
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), time.perf_counter() - start

    def clean():
        for path in (output, os.path.join(os.path.dirname(output),
                                          "." + os.path.basename(output) + ".partial")):
            if os.path.exists(path):
                os.remove(path)

    code, duration = run()                         # an uninterrupted run: its length
    assert code == 0, code
    os.replace(output, output + ".reference")
    report = {"duration": duration, "kills": 0, "killed_mid_run": 0, "finals": [],
              "finished_before_kill": 0}
    for episode in range(int(episodes)):
        clean()
        for _ in range(int(kills)):
            code, _ = run(random.uniform(0.0, duration))
            report["kills"] += 1
            report["killed_mid_run"] += code == -signal.SIGKILL and not os.path.exists(output)
            if os.path.exists(output):              # finished before the kill: keep it
                report["finished_before_kill"] += 1
                os.replace(output, f"{output}.k{report['finished_before_kill']}")
        code, _ = run()
        report["finals"].append(code)
        if code == 0:
            os.replace(output, f"{output}.{episode}")
    print(json.dumps(report))
""")


def kill_episodes(tmp_path, command, config, output):
    """Run the fork server; returns its report (kills, exit codes of the completing runs)."""
    config_path = write_yaml(tmp_path / f"{command}.yml", config)
    proc = subprocess.run(
        [sys.executable, "-c", SERVER, command, config_path, output, str(KILL_EPISODES),
         str(KILLS_PER_EPISODE), "2026"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), stderr=proc.stderr[-3000:])


def test_kill_9_preprocess_resumes_bitwise(tmp_path):
    """30 kill -9's during preprocess (chunks, writes, rename, lock): every completing run
    exits 0 and its frames are bitwise those of an uninterrupted run."""
    write_stack(tmp_path / "scan.h5")
    output = str(tmp_path / "out.h5")
    report = kill_episodes(tmp_path, "preprocess", preprocess_config(tmp_path), output)
    assert report["kills"] == KILL_EPISODES * KILLS_PER_EPISODE
    assert report["killed_mid_run"] >= report["kills"] // 3      # most kills hit a live run
    assert report["finals"] == [0] * KILL_EPISODES, report["stderr"]
    reference = frames_of(output + ".reference")
    finished = [f"{output}.k{k + 1}" for k in range(report["finished_before_kill"])]
    for path in [f"{output}.{episode}" for episode in range(KILL_EPISODES)] + finished:
        np.testing.assert_array_equal(frames_of(path), reference)
    assert not os.path.exists(lock_path(output))


def test_kill_9_segment_resumes_bitwise(tmp_path):
    """30 kill -9's during segment (labelling, windows, checkpoint writes, the difspot
    file): every completing run exits 0 with the voxels of an uninterrupted run."""
    write_stack(tmp_path / "scan.h5", n=30, baseline=0.0)
    output = str(tmp_path / "spots.h5")
    report = kill_episodes(tmp_path, "segment", segment_config(tmp_path), output)
    assert report["kills"] == KILL_EPISODES * KILLS_PER_EPISODE
    assert report["killed_mid_run"] >= report["kills"] // 3
    assert report["finals"] == [0] * KILL_EPISODES, report["stderr"]
    reference = spots_of(output + ".reference")
    assert len(reference["offsets"]) > 5
    finished = [f"{output}.k{k + 1}" for k in range(report["finished_before_kill"])]
    for path in [f"{output}.{episode}" for episode in range(KILL_EPISODES)] + finished:
        for name, values in spots_of(path).items():
            np.testing.assert_array_equal(values, reference[name])


class Stop(Exception):
    pass


def stop_after(index):
    def on_chunk(chunk, first, stop):
        if chunk >= index:
            raise Stop
    return on_chunk


def interrupted_preprocess(tmp_path, chunks=3, **extra):
    """An unfinished preprocess run (chunks 0..chunks written); returns its config."""
    config = preprocess_config(tmp_path, **extra)
    with pytest.raises(Stop):
        preprocess(config, progress=False, on_chunk=stop_after(chunks))
    assert os.path.exists(partial_path(config["preprocess"]["output"]))
    return config


@pytest.mark.parametrize("change", ["rewritten", "grown", "truncated"])
def test_preprocess_changed_input_refused_or_restarted(tmp_path, change):
    """An input rewritten with other values (same shape), grown by frames or cut short
    between two runs is never mixed: the rerun refuses, naming what changed (exit 2 from the
    command line); --restart gives the result of a fresh run."""
    write_stack(tmp_path / "scan.h5", seed=1)
    config = interrupted_preprocess(tmp_path)
    write_stack(tmp_path / "scan.h5", seed=2, n={"rewritten": 40, "grown": 44,
                                                "truncated": 30}[change])
    with pytest.raises(RunChangedError, match="inputs changed.*(checksum|shape)"):
        preprocess(config, progress=False)
    path = write_yaml(tmp_path / "p.yml", config)
    assert main(["preprocess", "--no-progress", path]) == 2
    assert main(["preprocess", "--no-progress", "--restart", path]) == 0
    fresh = preprocess(preprocess_config(tmp_path, name="fresh.h5"), progress=False)
    np.testing.assert_array_equal(frames_of(config["preprocess"]["output"]),
                                  frames_of(fresh.output))


def test_segment_changed_input_refused(tmp_path):
    """A segment run resumed on a regenerated input (same shape, other values) is refused;
    the API refuses a checkpoint of another in-memory stack of the same shape."""
    write_stack(tmp_path / "scan.h5", seed=1, n=30, baseline=0.0)
    config = segment_config(tmp_path)
    folder = checkpoint_path(config["segment"]["output"])
    os.makedirs(folder)
    stack = h5py.File(tmp_path / "scan.h5")["/entry/data"][()]
    params = dict(seed_threshold=40.0, tau=0.3, bb_max=[2, 3, 3], chunk_frames=3)
    segment(stack, **params, checkpoint=tmp_path / "ck")
    other = write_stack(tmp_path / "scan.h5", seed=2, n=30, baseline=0.0)
    with pytest.raises(ValueError, match="checkpoint.*checksum of sampled frames"):
        segment(other, **params, checkpoint=tmp_path / "ck")
    assert len(segment(other, **params, checkpoint=tmp_path / "ck", restart=True)) == \
        len(segment(other, **params))
    # the command line: an unfinished run of the old file, then the file regenerated
    write_stack(tmp_path / "scan.h5", seed=1, n=30, baseline=0.0)
    segment(h5py.File(tmp_path / "scan.h5")["/entry/data"], **params, checkpoint=folder,
            source=f"{tmp_path}/scan.h5::/entry/data")
    write_stack(tmp_path / "scan.h5", seed=2, n=30, baseline=0.0)
    path = write_yaml(tmp_path / "s.yml", config)
    assert main(["segment", "--no-progress", path]) == 2
    assert main(["segment", "--no-progress", "--restart", path]) == 0


def _patch_end_of_file(path, size):
    """Cut an HDF5 file at ``size`` and write that size as its end-of-file address
    (superblock version 0, the h5py default): the file still opens, with chunk addresses
    past its end, as a kill during a compressed write can leave it."""
    import struct

    with open(path, "r+b") as handle:
        assert handle.read(9)[8] == 0                         # superblock version 0
        handle.truncate(size)
        handle.seek(40)
        handle.write(struct.pack("<Q", size))


def test_partial_with_chunks_past_end_is_salvaged(tmp_path):
    """A compressed partial file whose last chunks lie past its end: the chunks that verify
    are kept, the others computed again; the result equals an uninterrupted run."""
    write_stack(tmp_path / "scan.h5")
    config = interrupted_preprocess(tmp_path, chunks=6, compression="gzip")
    partial = partial_path(config["preprocess"]["output"])
    with h5py.File(partial, "r") as h5:
        offset = h5["/entry/preprocessed/data"].id.get_chunk_info_by_coord((20, 0, 0))
    _patch_end_of_file(partial, offset.byte_offset + 10)
    with h5py.File(partial, "r") as h5:                      # opens: the damage is inside
        assert h5["/entry/process/chunk_done"][()].sum() == 7
    result = preprocess(config, progress=False)
    assert result.chunks_salvaged_redone >= 1 and result.chunks_skipped >= 1
    fresh = preprocess(preprocess_config(tmp_path, name="fresh.h5", compression="gzip"),
                       progress=False)
    np.testing.assert_array_equal(frames_of(result.output), frames_of(fresh.output))


def test_partial_with_garbage_in_a_chunk_is_redone(tmp_path):
    """Bytes of a finished chunk overwritten on disk: its CRC-32 fails, it is computed again."""
    write_stack(tmp_path / "scan.h5")
    config = interrupted_preprocess(tmp_path)
    partial = partial_path(config["preprocess"]["output"])
    with h5py.File(partial, "r") as h5:
        info = h5["/entry/preprocessed/data"].id.get_chunk_info_by_coord((5, 0, 0))
    with open(partial, "r+b") as handle:
        handle.seek(info.byte_offset + 100)
        handle.write(b"\xff" * 16)
    result = preprocess(config, progress=False)
    assert result.chunks_salvaged_redone == 1
    fresh = preprocess(preprocess_config(tmp_path, name="fresh.h5"), progress=False)
    np.testing.assert_array_equal(frames_of(result.output), frames_of(fresh.output))


def test_unreadable_partial_refused_with_remedy(tmp_path):
    """A partial file HDF5 cannot open: a one-line error saying what to delete (exit 2),
    and --restart starts again."""
    write_stack(tmp_path / "scan.h5")
    config = interrupted_preprocess(tmp_path)
    partial = partial_path(config["preprocess"]["output"])
    os.truncate(partial, os.path.getsize(partial) // 3)
    with pytest.raises(PartialFileError, match="delete .*--restart"):
        preprocess(config, progress=False)
    path = write_yaml(tmp_path / "p.yml", config)
    assert main(["preprocess", "--no-progress", path]) == 2
    assert main(["preprocess", "--no-progress", "--restart", path]) == 0


def test_planted_external_link_never_followed(tmp_path):
    """An HDF5 external link planted in a partial file in place of the frames: the file it
    points to is never written; the partial is salvaged and the result is right."""
    write_stack(tmp_path / "scan.h5")
    config = interrupted_preprocess(tmp_path)
    victim = tmp_path / "victim.h5"
    with h5py.File(victim, "w") as h5:
        h5["/d"] = np.zeros((40, 24, 24), np.float32)
    before = victim.read_bytes()
    with h5py.File(partial_path(config["preprocess"]["output"]), "r+") as h5:
        del h5["/entry/preprocessed/data"]
        h5["/entry/preprocessed/data"] = h5py.ExternalLink(str(victim), "/d")
    result = preprocess(config, progress=False)
    assert victim.read_bytes() == before
    fresh = preprocess(preprocess_config(tmp_path, name="fresh.h5"), progress=False)
    np.testing.assert_array_equal(frames_of(result.output), frames_of(fresh.output))


def test_planted_symlinks_never_followed(tmp_path):
    """Symbolic links planted at a partial file, a writer's temporary name, a checkpoint
    folder or a lock file: never followed (the target is unchanged), refused with an OSError
    that names the link, or stepped around (the atomic writer picks its own new name)."""
    write_stack(tmp_path / "scan.h5")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    config = preprocess_config(tmp_path)
    os.symlink(victim, partial_path(config["preprocess"]["output"]))
    with pytest.raises(OSError, match="symbolic link"):
        preprocess(config, progress=False)
    os.symlink(victim, partial_path(tmp_path / "notes.txt"))
    with atomic_output(tmp_path / "notes.txt") as tmp, open(tmp, "w") as handle:
        handle.write("new")
    assert (tmp_path / "notes.txt").read_text() == "new"
    with pytest.raises(OSError, match="symbolic link"):
        with atomic_output(tmp_path / "notes.txt", keep_partial=True):
            pass
    seg = segment_config(tmp_path)
    os.symlink(tmp_path, checkpoint_path(seg["segment"]["output"]))
    with pytest.raises(OSError, match="symbolic link"):
        run_segment(seg, progress=False)
    os.symlink(victim, lock_path(tmp_path / "other.h5"))
    with pytest.raises(OSError):
        RunLock(tmp_path / "other.h5").acquire()
    assert victim.read_text() == "precious"


def test_damaged_checkpoint_files_recomputed(tmp_path):
    """Garbage in a saved window or the seeds of a segment checkpoint is computed again."""
    stack = write_stack(tmp_path / "scan.h5", n=30, baseline=0.0)
    params = dict(seed_threshold=40.0, tau=0.3, bb_max=[2, 3, 3], chunk_frames=3)
    expected = segment(stack, **params)
    segment(stack, **params, checkpoint=tmp_path / "ck")
    names = sorted(os.listdir(tmp_path / "ck"))
    for name in names:
        if name.endswith((".npz", ".npy")):
            (tmp_path / "ck" / name).write_bytes(b"PK\x03\x04 not a zip")
    again = segment(stack, **params, checkpoint=tmp_path / "ck")
    np.testing.assert_array_equal(again.voxels, expected.voxels)


def test_second_run_on_one_output_refused(tmp_path):
    """A live run's lock refuses a second run (exit 1, one line naming the lock); a lock left
    by a dead process is taken over; two runs started at once: one finishes, the other is
    refused or finds the work done, and the output equals an uninterrupted run."""
    write_stack(tmp_path / "scan.h5")
    config = preprocess_config(tmp_path)
    output = config["preprocess"]["output"]
    with RunLock(output):                              # this process: alive
        with pytest.raises(RunLockedError, match="another run is writing"):
            preprocess(config, progress=False)
        assert main(["preprocess", "--no-progress", write_yaml(tmp_path / "p.yml", config)]) == 1
    seg = segment_config(tmp_path)
    with RunLock(seg["segment"]["output"]):
        with pytest.raises(RunLockedError, match="another run is writing"):
            run_segment(seg, progress=False)
    with open(lock_path(output), "w") as handle:       # a dead process's lock
        json.dump({"host": os.uname().nodename, "pid": 2**22 + 7, "start": "1"}, handle)
    preprocess(config, progress=False)
    assert not os.path.exists(lock_path(output))
    two = textwrap.dedent(f"""
        import os, sys
        from xreduce.cli.dct import main
        pids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                os._exit(main(["preprocess", "--no-progress", {str(tmp_path / 'q.yml')!r}]))
            pids.append(pid)
        print([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids])
    """)
    write_yaml(tmp_path / "q.yml", preprocess_config(tmp_path, name="both.h5"))
    proc = subprocess.run([sys.executable, "-c", two], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 in codes and set(codes) <= {0, 1, 2}, (codes, proc.stderr[-2000:])
    np.testing.assert_array_equal(frames_of(tmp_path / "both.h5"), frames_of(output))


def test_outputs_honour_the_umask(tmp_path):
    """Every file the DCT steps write is created like open() does: 0644 under umask 022
    (0640 under 027), the partial and checkpoint files included."""
    write_stack(tmp_path / "scan.h5", n=30)
    old = os.umask(0o022)
    try:
        config = interrupted_preprocess(tmp_path)
        partial = partial_path(config["preprocess"]["output"])
        assert os.stat(partial).st_mode & 0o777 == 0o644
        out = preprocess(config, progress=False).output
        seg = segment_config(tmp_path, source="out.h5")   # preprocess's dataset by default
        segment(h5py.File(out)["/entry/preprocessed/data"], 40.0, 0.3, 2,
                checkpoint=tmp_path / "ck", chunk_frames=5)
        run_segment(seg, progress=False)
        os.umask(0o027)
        with atomic_output(tmp_path / "x.txt") as tmp, open(tmp, "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    modes = {p: os.stat(p).st_mode & 0o777 for p in
             [out, seg["segment"]["output"], *(tmp_path / "ck").iterdir()]}
    assert set(modes.values()) == {0o644}, modes
    assert os.stat(tmp_path / "x.txt").st_mode & 0o777 == 0o640


def test_outputs_are_nexus(tmp_path):
    """Preprocessed stacks and difspot files: silx finds a valid default NXdata from the
    root (@default chain, NX_class), and segment reads preprocess's output by default."""
    from silx.io.nxdata import get_default

    write_stack(tmp_path / "scan.h5", n=30)
    out = preprocess(preprocess_config(tmp_path), progress=False).output
    run_segment(segment_config(tmp_path, source="out.h5"), progress=False)
    for path, signal in ((out, "data"), (tmp_path / "spots.h5", "projection")):
        with h5py.File(path, "r") as h5:
            nxdata = get_default(h5)
            assert nxdata is not None and nxdata.is_valid, path
            assert nxdata.signal.name.endswith(signal)
    with h5py.File(tmp_path / "spots.h5", "r") as h5:
        image = h5["/difspots/overview/projection"][()]
        assert image.sum() == pytest.approx(h5["/difspots/values"][()].sum())


def test_command_line_faults_are_one_line(tmp_path, capsys):
    """Faults of the command line end in one line naming the file and an exit status:
    a missing output folder (2, nothing created), an HDF5 file without the dataset (2), a
    truncated input (1 or 2), a full disk (1)."""
    write_stack(tmp_path / "scan.h5", n=30)
    cases = [
        (segment_config(tmp_path, name="nowhere/spots.h5"), "segment", 2, "nowhere"),
        (segment_config(tmp_path, source="scan.h5"), "segment", 2, "/entry/preprocessed/data"),
        (preprocess_config(tmp_path, name="nowhere/out.h5"), "preprocess", 2, "nowhere"),
    ]
    for config, command, code, words in cases:
        path = write_yaml(tmp_path / f"{command}.yml", config)
        assert main([command, "--no-progress", path]) == code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not os.path.exists(tmp_path / "nowhere")
    write_stack(tmp_path / "big.h5", n=200, shape=(64, 64))
    os.truncate(tmp_path / "big.h5", os.path.getsize(tmp_path / "big.h5") // 2)
    path = write_yaml(tmp_path / "t.yml", preprocess_config(
        tmp_path, name="t.h5", input=f"{tmp_path}/big.h5::/entry/data"))
    assert main(["preprocess", "--no-progress", path]) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "big.h5" in err, err
    full_disk = textwrap.dedent(f"""
        import resource, signal
        from xreduce.cli.dct import main
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
        raise SystemExit(main(["preprocess", "--no-progress", {path!r}]))
    """)
    write_stack(tmp_path / "big.h5", n=100, shape=(64, 64))
    proc = subprocess.run([sys.executable, "-c", full_disk], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "t.h5" in proc.stderr
    seg = write_yaml(tmp_path / "s.yml", segment_config(tmp_path, name="full.h5",
                                                        source="big.h5::/entry/data"))
    proc = subprocess.run([sys.executable, "-c", full_disk.replace(path, seg).replace(
        '"preprocess"', '"segment"')], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "full.h5" in proc.stderr


def test_atomic_writer_contract(tmp_path):
    """The one atomic writer: a new temporary per call (two writers of one path do not
    share it), nothing left behind on error, overwrite=False never replaces a file that
    appeared meanwhile, the final file complete or absent."""
    final = tmp_path / "result.npy"
    with atomic_output(final) as first, atomic_output(final) as second:
        assert first != second and os.path.dirname(first) == str(tmp_path)
        np.save(first, np.arange(3))
        np.save(second, np.arange(4))
    assert np.load(final).tolist() == [0, 1, 2]            # the last renamed wins, whole
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(final) as tmp:
            np.save(tmp, np.arange(9))
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["result.npy"]
    with pytest.raises(FileExistsError):
        with atomic_output(tmp_path / "new.txt", overwrite=False) as tmp:
            open(tmp, "w").write("mine")
            (tmp_path / "new.txt").write_text("theirs")      # appeared meanwhile
    assert (tmp_path / "new.txt").read_text() == "theirs"
    assert sorted(os.listdir(tmp_path)) == ["new.txt", "result.npy"]


def test_ctrl_c_exit_status_and_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a run: exit status 130 and one line saying to run again, which
    resumes to the uninterrupted result."""
    module = sys.modules["xreduce.dct.preprocess"]    # the package exports a function so named
    write_stack(tmp_path / "scan.h5")
    config = preprocess_config(tmp_path)
    path = write_yaml(tmp_path / "p.yml", config)
    real = module.preprocess

    def interrupted(*args, **kwargs):
        def on_chunk(index, first, stop):
            if index == 2:
                raise KeyboardInterrupt
        return real(*args, **kwargs, on_chunk=on_chunk)

    monkeypatch.setattr(module, "preprocess", interrupted)
    assert main(["preprocess", "--no-progress", path]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again" in err
    monkeypatch.undo()
    assert main(["preprocess", "--no-progress", path]) == 0
    assert "3 resumed" in capsys.readouterr().out
    fresh = preprocess(preprocess_config(tmp_path, name="fresh.h5"), progress=False)
    np.testing.assert_array_equal(frames_of(config["preprocess"]["output"]),
                                  frames_of(fresh.output))
