"""Double-threshold segmentation against the slow reference of the same rules.

Spots are sets of voxel indices: comparisons are exact (same spots, same peaks, same voxels).
"""
import numpy as np
import pytest

import reference
from xreduce.dct.segment import Segmentation, segment

SHAPE = (24, 48, 48)


def add_gaussian(stack, centre, sigma, amplitude):
    """Add amplitude * exp(-|x - centre|^2 / 2 sigma^2) (per-axis sigma) to the stack."""
    grids = np.meshgrid(*[np.arange(n) for n in stack.shape], indexing="ij")
    arg = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma))
    stack += (amplitude * np.exp(-0.5 * arg)).astype(stack.dtype)
    return stack


def scenario(name, rng):
    """Synthetic stacks covering the cases the rules must handle."""
    stack = np.zeros(SHAPE, np.float32)
    if name == "touching":  # tails overlap: blobs compete for voxels
        add_gaussian(stack, (10, 18, 18), (1.5, 2.0, 2.0), 100.0)
        add_gaussian(stack, (11, 18, 26), (1.5, 2.0, 2.0), 70.0)
        add_gaussian(stack, (12, 26, 22), (1.0, 1.5, 1.5), 40.0)
    elif name == "edges":  # maxima on faces, edges and corners of the stack
        add_gaussian(stack, (0, 0, 0), (1.5, 2, 2), 80.0)
        add_gaussian(stack, (23, 47, 10), (1.5, 2, 2), 60.0)
        add_gaussian(stack, (12, 30, 47), (2, 2, 1), 90.0)
        add_gaussian(stack, (5.4, 0.3, 30), (1, 1.5, 3), 50.0)
    elif name == "chunks":  # long along frames: crosses chunk borders
        add_gaussian(stack, (7.5, 15, 15), (4.0, 2.0, 2.0), 60.0)
        add_gaussian(stack, (14, 30, 30), (3.0, 2.0, 2.0), 45.0)
        add_gaussian(stack, (3, 40, 8), (2.0, 1.5, 1.5), 30.0)
    elif name == "flat":  # flat tops: ties for the maximum, integer counts
        add_gaussian(stack, (8, 16, 16), (2, 3, 3), 200.0)
        add_gaussian(stack, (15, 32, 30), (2, 2, 2), 150.0)
        stack = np.minimum(stack, 50.0).round().astype(np.uint16)
    elif name == "noise":  # many small noise seeds next to real spots
        add_gaussian(stack, (9, 20, 24), (2, 2.5, 2.5), 60.0)
        add_gaussian(stack, (16, 36, 12), (1.5, 2, 2), 35.0)
        stack += rng.normal(0, 3.0, SHAPE).astype(np.float32)
    return stack


def as_list(result: Segmentation):
    """(peak flat index, voxels) per spot, like the reference."""
    peaks = np.ravel_multi_index(result.peaks.T, result.shape)
    return [(int(p), result.voxels[result.offsets[i]:result.offsets[i + 1]])
            for i, p in enumerate(peaks)]


def assert_same(result, expected):
    got = as_list(result)
    assert [p for p, _ in got] == [p for p, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        np.testing.assert_array_equal(a, b)


PARAMS = {
    "touching": dict(seed_threshold=30.0, tau=0.1, bb_max=(4, 8, 8)),
    "edges": dict(seed_threshold=10.0, tau=0.1, bb_max=(3, 6, 6)),
    "chunks": dict(seed_threshold=10.0, tau=0.2, bb_max=(10, 6, 6)),
    "flat": dict(seed_threshold=20.0, tau=0.1, bb_max=(4, 8, 8), grow_limits=(7, 20)),
    "noise": dict(seed_threshold=9.0, tau=0.25, bb_max=(4, 7, 7), min_seed_voxels=3,
                  min_size=5, max_size=3000),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("chunk_frames", [None, 3])
def test_segment_equals_reference(rng, name, connectivity, chunk_frames):
    """Same spots, peaks and voxels as the reference, whole or by chunks of 3 frames."""
    stack = scenario(name, rng)
    params = PARAMS[name]
    expected = reference.segment_reference(stack, connectivity=connectivity, **params)
    result = segment(stack, connectivity=connectivity, chunk_frames=chunk_frames, **params)
    assert len(expected) > 0
    assert_same(result, expected)
    # values are the stack's, voxels are disjoint
    np.testing.assert_array_equal(result.values, stack.ravel()[result.voxels].astype(np.float64))
    assert len(np.unique(result.voxels)) == len(result.voxels)


def test_overlap_is_resolved(rng):
    """Touching spots: grown alone their blobs intersect; the spots are disjoint subsets of them,
    and the brightest spot keeps its whole blob."""
    from scipy import ndimage
    stack = scenario("touching", rng)
    result = segment(stack, 30.0, 0.3, (4, 8, 8))
    assert len(result) == 3
    alone = []
    for p, top in zip(result.peaks, result.peak_values):
        lo = np.maximum(p - (4, 8, 8), 0)
        box = tuple(slice(a, b) for a, b in zip(lo, p + (5, 9, 9)))
        comp, _ = ndimage.label(stack[box] >= 0.3 * top, np.ones((3, 3, 3)))
        alone.append(set(np.ravel_multi_index((np.argwhere(comp == comp[tuple(p - lo)]) + lo).T, SHAPE)))
    assert any(alone[i] & alone[j] for i in range(3) for j in range(i + 1, 3))
    spots = [set(result.voxels[result.offsets[i]:result.offsets[i + 1]]) for i in range(3)]
    assert all(spots[i] <= alone[i] for i in range(3))
    assert sum(map(len, spots)) == len(set().union(*spots))
    brightest = int(np.argmax(result.peak_values))
    assert spots[brightest] == alone[brightest]


@pytest.mark.parametrize("increment", [1, 2, (1, 3, 5), (4, 8, 8)])
def test_box_increment_does_not_change_result(rng, increment):
    """Growing the box step by step gives the fill of the full bb_max box."""
    stack = scenario("noise", rng)
    params = dict(seed_threshold=9.0, tau=0.05, bb_max=(4, 8, 8), min_seed_voxels=2)
    expected = reference.segment_reference(stack, **params)
    assert_same(segment(stack, box_increment=increment, **params), expected)


def test_threads_and_chunks_do_not_change_result(rng):
    """Thread count and chunking give identical results (deterministic overlap rule)."""
    stack = scenario("noise", rng)
    params = dict(seed_threshold=8.0, tau=0.1, bb_max=(4, 7, 7))
    base = as_list(segment(stack, num_threads=1, **params))
    for kwargs in (dict(num_threads=2), dict(chunk_frames=1), dict(chunk_frames=5, num_threads=2)):
        other = as_list(segment(stack, **params, **kwargs))
        assert [p for p, _ in other] == [p for p, _ in base]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(other, base))


def test_grow_limits_clamp(rng):
    """grow_limits=(7, 20) clamps 0.1 * M as the DCT code does; threshold never exceeds M."""
    stack = np.zeros((6, 12, 12), np.float32)
    stack[2, 3, 3] = 500.0          # 0.1 M = 50 -> 20
    stack[2, 8, 8] = 12.0           # 0.1 M = 1.2 -> 7
    stack[4, 3, 9] = 6.0            # M below the lower limit -> M
    result = segment(stack, 5.0, 0.1, 2, grow_limits=(7, 20))
    np.testing.assert_array_equal(result.thresholds, [20.0, 7.0, 6.0])


def test_h5py_input(rng, tmp_path):
    """A lazy h5py dataset segments like the array, chunk by chunk."""
    h5py = pytest.importorskip("h5py")
    stack = scenario("chunks", rng)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["stack"] = stack
        result = segment(h5["stack"], chunk_frames=4, **PARAMS["chunks"])
    assert_same(result, as_list(segment(stack, **PARAMS["chunks"])))


from xreduce.io.run_identity import SAMPLED_FRAMES  # noqa: E402


class Interrupted(Exception):
    pass


class FlakyStack:
    """A stack whose frame slices fail after ``fail_after`` reads (an interrupted run);
    counts the reads."""

    def __init__(self, stack, fail_after=None):
        self.stack, self.fail_after, self.reads = stack, fail_after, 0
        self.shape, self.dtype = stack.shape, stack.dtype

    def __getitem__(self, frames):
        if self.fail_after is not None and self.reads >= self.fail_after:
            raise Interrupted
        self.reads += 1
        return self.stack[frames]


def test_interrupted_run_resumes(rng, tmp_path):
    """A run interrupted during the growth resumes from its checkpoint without labelling or
    growing again what it saved, and gives the uninterrupted result voxel for voxel; a
    checkpoint of other parameters or another stack is refused."""
    stack = scenario("chunks", rng)
    params = dict(PARAMS["chunks"], chunk_frames=3)
    expected = as_list(segment(stack, **params))
    sampled = min(SHAPE[0], SAMPLED_FRAMES)             # one-frame reads of the identity
    full = FlakyStack(stack)
    segment(full, **params, checkpoint=tmp_path / "full")
    windows = full.reads - sampled - SHAPE[0] // 3      # reads of the growth phase
    assert windows >= 3

    cut = FlakyStack(stack, fail_after=sampled + SHAPE[0] // 3 + 2)  # labelling + 2 windows
    with pytest.raises(Interrupted):
        segment(cut, **params, checkpoint=tmp_path / "cp", source="scan.h5")
    again = FlakyStack(stack)
    assert_same(segment(again, **params, checkpoint=tmp_path / "cp", source="scan.h5"),
                expected)
    assert again.reads == sampled + windows - 2        # no labelling, 2 windows skipped
    done = FlakyStack(stack)                            # everything saved: only the identity
    assert_same(segment(done, **params, checkpoint=tmp_path / "cp", source="scan.h5"),
                expected)
    assert done.reads == sampled
    other = stack.copy()
    other[-1] += 1                                      # same shape, another last frame
    with pytest.raises(ValueError, match="checkpoint.*checksum of sampled frames"):
        segment(other, **params, checkpoint=tmp_path / "cp", source="scan.h5")
    with pytest.raises(ValueError, match="checkpoint.*other parameters"):
        segment(stack, **dict(params, tau=0.3), checkpoint=tmp_path / "cp", source="scan.h5")
    with pytest.raises(ValueError, match="checkpoint"):
        segment(stack, **params, checkpoint=tmp_path / "cp", source="other.h5")


def test_no_spot_and_nan():
    """A stack with nothing above the seed threshold, or NaN, gives an empty result."""
    stack = np.zeros((5, 8, 8), np.float32)
    result = segment(stack, 1.0, 0.5, 3)
    assert len(result) == 0 and result.voxels.size == 0 and result.offsets.tolist() == [0]
    stack[:] = np.nan
    assert len(segment(stack, 1.0, 0.5, 3, chunk_frames=2)) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=-0.1), "tau"), (dict(tau=1.5), "tau"), (dict(tau=np.nan), "tau"),
    (dict(bb_max=0), "bb_max"), (dict(bb_max=(2, -1, 3)), "bb_max"), (dict(bb_max=2.5), "bb_max"),
    (dict(seed_threshold=np.inf), "seed_threshold"), (dict(grow_limits=(20, 7)), "grow_limits"),
    (dict(min_size=0), "min_size"), (dict(max_size=0), "max_size"),
    (dict(min_seed_voxels=0), "min_seed_voxels"), (dict(connectivity=18), "connectivity"),
    (dict(chunk_frames=0), "chunk_frames"), (dict(box_increment=0), "box_increment"),
])
def test_bad_arguments(kwargs, match):
    """Each bad argument raises a ValueError naming it."""
    args = dict(seed_threshold=1.0, tau=0.5, bb_max=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        segment(np.ones((4, 6, 6), np.float32), **args)


def test_bad_stack():
    """Empty or non-3D stacks raise ValueError; boolean stacks TypeError."""
    with pytest.raises(ValueError, match="stack"):
        segment(np.zeros((0, 6, 6)), 1.0, 0.5, 3)
    with pytest.raises(ValueError, match="stack"):
        segment(np.zeros((6, 6)), 1.0, 0.5, 3)
    with pytest.raises(TypeError, match="stack"):
        segment(np.zeros((2, 6, 6), bool), 1.0, 0.5, 3)
