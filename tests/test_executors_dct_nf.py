"""DCT preprocessing and the NF fit on the executors of :mod:`xreduce.executors`: the same
bits on this machine, on a thread pool and on a real dask LocalCluster of 2 worker processes
(doc/stack.md, "Other jobs on the same executors").

Tolerance: none. A chunk (frames, or voxels) is computed by the same code whichever process
runs it, and nothing in it depends on the other chunks, so every array is compared bitwise.
"""
import concurrent.futures
import contextlib

import h5py
import numpy as np
import pytest

from nf_fit_cases import rotate_by, voronoi_case
from test_dct_preprocess import make_config
from xreduce.dct import preprocess
from xreduce.dct.config import ConfigError
from xreduce.nf.fit import fit_orientations
from xreduce.nf.microstructure import random_orientations


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, started once for this module and stopped."""
    pytest.importorskip("distributed")
    from xreduce.executors import open_cluster

    with open_cluster(workers=2) as dask_client:
        yield dask_client


def outputs(path, with_background):
    with h5py.File(path) as h5:
        arrays = [h5["/entry/preprocessed/data"][()], h5["/entry/process/chunk_crc32"][()]]
        if with_background:
            arrays.append(h5["/entry/background/data"][()])
    return arrays


def assert_same_bits(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


VARIANTS = {
    "background_saved_median3": {"save_background": True, "median_filter": {"size": 3}},
    "step2_linear": {"moving_median": {"window": 15, "step": 2, "interpolation": "linear"}},
    "no_background": {"moving_median": {"window": None}, "median_filter": {"size": 3}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_preprocess_thread_pool_same_bits(tmp_path, rng, variant):
    keys = VARIANTS[variant]
    config, *_ = make_config(tmp_path, rng, **keys)
    config["preprocess"]["overwrite"] = True
    with_background = keys.get("save_background", False)
    local = preprocess(config, progress=False)
    expected = outputs(local.output, with_background)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        result = preprocess(config, progress=False, executor=pool)
    assert result.chunks_computed == result.chunks_total == local.chunks_total
    assert_same_bits(outputs(result.output, with_background), expected)


def test_preprocess_dask_cluster_same_bits(tmp_path, rng, client):
    config, *_ = make_config(tmp_path, rng, save_background=True, median_filter={"size": 3},
                             overwrite=True)
    local = preprocess(config, progress=False)
    expected = outputs(local.output, True)
    result = preprocess(config, progress=False, executor=client)
    assert result.chunks_computed == result.chunks_total == 9
    assert_same_bits(outputs(result.output, True), expected)


def test_preprocess_resumes_on_an_executor(tmp_path, rng):
    """Interrupted on this machine after 3 chunks, resumed on a thread pool: the finished
    chunks are kept, the rest computed there, the file identical to one uninterrupted run."""
    config, *_ = make_config(tmp_path, rng, overwrite=True)
    expected = outputs(preprocess(config, progress=False).output, False)
    seen = []

    def stop_after_three(index, first, stop):
        seen.append(index)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(config, progress=False, on_chunk=stop_after_three)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        result = preprocess(config, progress=False, executor=pool)
    assert (result.chunks_skipped, result.chunks_computed) == (3, 6)
    assert_same_bits(outputs(result.output, False), expected)


def test_preprocess_executor_options_checked(tmp_path, rng):
    config, *_ = make_config(tmp_path, rng)
    with pytest.raises(TypeError, match="executor: expected None"):
        preprocess(config, progress=False, executor="dask")
    both = dict(config["preprocess"], workers=2, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="workers: give either"):
        preprocess({"preprocess": both}, progress=False)
    with pytest.raises(ConfigError, match="preprocess.workers: expected an integer"):
        preprocess({"preprocess": dict(config["preprocess"], workers="two")}, progress=False)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, \
            pytest.raises(ValueError, match="executor: given together with"):
        preprocess({"preprocess": dict(config["preprocess"], workers=2)}, progress=False,
                   executor=pool)


def test_dct_command_line_workers_reach_the_executor(tmp_path, rng, fake_cluster):
    """``--workers 2`` opens a cluster of 2 workers and runs the chunks there (the cluster is
    a thread pool here: the dask case is tested above)."""
    import yaml

    from xreduce.cli.dct import main

    config, *_ = make_config(tmp_path, rng)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["preprocess", str(path), "--no-progress", "--workers", "2"]) == 0
    assert fake_cluster == {"workers": 2, "scheduler": None}
    assert (tmp_path / "out.h5").is_file()


@pytest.fixture(scope="module")
def nf_case():
    """~60 triangle voxels of 3 grains; seeds near the truth and random ones."""
    model, grid, micro, truth = voronoi_case(rsample_um=12.0, edge_um=4.0, n_grains=3, seed=2)
    rng = np.random.default_rng(3)
    seeds = np.concatenate([rotate_by(truth, rng.uniform(0.1, 0.3, len(truth)), rng),
                            random_orientations(6, rng)])
    return model, grid, seeds


def fit(nf_case, **kwargs):
    model, grid, seeds = nf_case
    return fit_orientations(model, grid, seeds, min_frac_accept=0.3, orient_tol_deg=0.5,
                            progress=False, chunk_voxels=16, num_threads=1, **kwargs)


def assert_same_fit(a, b):
    for name in ("euler_rad", "confidence", "row", "n_candidates", "solutions_euler_rad",
                 "solutions_confidence"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), name


def test_nf_fit_thread_pool_and_dask_same_results(nf_case, client):
    local = fit(nf_case)
    assert local.found.sum() > len(local.row) // 2  # a fit that finds something
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert_same_fit(fit(nf_case, executor=pool), local)
    assert_same_fit(fit(nf_case, executor=client), local)


def test_nf_fit_bad_executor(nf_case):
    with pytest.raises(TypeError, match="executor: expected None"):
        fit(nf_case, executor=object())


@pytest.fixture()
def fake_cluster(monkeypatch):
    """``open_cluster`` replaced by a thread pool; records what it was asked."""
    import xreduce.executors

    asked = {}

    @contextlib.contextmanager
    def fake(workers=None, scheduler=None):
        asked.update(workers=workers, scheduler=scheduler)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            yield pool

    monkeypatch.setattr(xreduce.executors, "open_cluster", fake)
    return asked


def test_preprocess_workers_key_opens_a_cluster(tmp_path, rng, fake_cluster):
    config, *_ = make_config(tmp_path, rng, workers=3)
    result = preprocess(config, progress=False)
    assert fake_cluster == {"workers": 3, "scheduler": None}
    assert result.chunks_computed == result.chunks_total


def test_nf_command_line_cluster_options(fake_cluster):
    from xreduce.cli.nf import _cluster, _parser

    args = _parser().parse_args(["p.txt", "--scheduler", "tcp://host:8786"])
    with _cluster(args.workers, args.scheduler) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
    assert fake_cluster == {"workers": None, "scheduler": "tcp://host:8786"}
    with _cluster(None, None) as executor:
        assert executor is None
