"""Simulated NF-HEDM data: binary spot images and intensity frames from a microstructure.

Every voxel diffracts along the spots of its orientation; each spot lights the voxel's polygon
(triangle) projected through the diffracted ray onto every detector distance (see
:mod:`xreduce.nf.spots`), in the frame of its omega.

Binary images (what the orientation fit reads) are lit-pixel stacks in MIDAS's SpotsInfo.bin
layout (:mod:`xreduce.nf.spotsinfo`): uint32 words, bit
``((distance * n_frames + frame) * NrPixelsY + y) * NrPixelsZ + z`` set (LSB first) where pixel
``(y, z)`` of that frame is lit. :func:`unpack_image` gives one frame.

Intensity frames are written in MIDAS's raw-frame orientation: pixel ``(y, z)`` is at row
``NrPixelsZ - 1 - z`` and column ``NrPixelsY - 1 - y`` of the image (what MIDAS's image
processing undoes), as TIFF series named ``{OrigFileName}_{nr:06d}.{extOrig}`` with
``nr = distance * NrFilesPerDistance + RawStartNr + frame`` (as MIDAS opens them) or as a
NeXus/HDF5 file (one NXdata per distance, frames first).

Example
-------
>>> from xreduce.nf.grid import hexagonal_grid
>>> from xreduce.nf.microstructure import voronoi_microstructure
>>> from xreduce.nf.reflections import reflection_list
>>> from xreduce.nf.spots import NFGeometry
>>> geo = NFGeometry(lsd_um=(3000.0,), bc_px=((128.0, 10.0),), px_um=1.48,
...                  wavelength_A=0.172979, omega_start_deg=-180.0, omega_step_deg=1.0,
...                  omega_ranges_deg=((-180.0, 180.0),),
...                  box_sizes_um=((-500.0, 500.0, -500.0, 500.0),), detector_shape=(256, 256))
>>> refl = reflection_list(225, (4.08,) * 3 + (90.0,) * 3, 0.172979, 3000.0, 300.0)
>>> micro = voronoi_microstructure(hexagonal_grid(20.0, 5.0), 3, seed=0)
>>> words = simulate_binary_images(micro, refl, geo, n_frames=360)
>>> words.dtype, words.size == 360 * 256 * 256 // 32
(dtype('uint32'), True)
>>> unpack_image(words, (1, 360, 256, 256), 0, 10).shape
(256, 256)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from xreduce.limits import check_allocation

from .crystal import euler_to_matrix
from .microstructure import Microstructure
from .reflections import ReflectionList
from .spots import NFGeometry, predict_spots, spot_footprints

__all__ = ["LitPixels", "lit_pixels", "simulate_binary_images", "unpack_image",
           "simulate_frames", "write_frames_tiff", "write_raw_frames", "write_frames_hdf5",
           "default_n_frames"]


@dataclass(frozen=True)
class LitPixels:
    """Every (distance, frame, y, z) pixel lit by a voxel's spot (repeats allowed), with the
    voxel that lit it."""

    distance: np.ndarray
    frame: np.ndarray
    y: np.ndarray
    z: np.ndarray
    voxel: np.ndarray


def default_n_frames(geometry: NFGeometry) -> int:
    """``geometry.n_frames`` or, when unset, the frames the omega ranges reach."""
    if geometry.n_frames is not None:
        return int(geometry.n_frames)
    ends = np.asarray(geometry.omega_ranges_deg, dtype=np.float64).ravel()
    frames = geometry.frame_of(ends)
    # an end exactly on a frame boundary belongs to the previous frame
    return int(max(frames.max(), 0))


def lit_pixels(micro: Microstructure, reflections: ReflectionList, geometry: NFGeometry,
               conservative: bool = False, chunk_voxels: int = 4096, progress: bool = False,
               num_threads: int = 0) -> LitPixels:
    """All lit pixels of a microstructure (spots predicted once per distinct orientation).

    Parameters
    ----------
    micro : Microstructure
    reflections : ReflectionList
    geometry : NFGeometry
    conservative : bool
        Footprint rule, see :func:`xreduce.nf.spots.spot_footprints`.
    chunk_voxels : int
        Voxels per batch (bounds memory).
    progress : bool
        Show a tqdm progress bar.
    """
    if not isinstance(micro, Microstructure):
        raise TypeError(f"micro: expected Microstructure, got {type(micro).__name__}")
    uniq, inverse = np.unique(micro.euler_rad, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    spots = predict_spots(euler_to_matrix(uniq), reflections, geometry, num_threads)
    per_orient = np.bincount(spots.orientation, minlength=len(uniq))
    start = np.r_[0, np.cumsum(per_orient)]
    verts = micro.grid.vertices_um()
    nd = geometry.n_distances
    parts = []
    chunks = range(0, len(micro), chunk_voxels)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="NF spots", unit="chunk")
    for c0 in chunks:
        vox = np.arange(c0, min(c0 + chunk_voxels, len(micro)))
        o = inverse[vox]
        n_sp = per_orient[o]
        voxel_of_spot = np.repeat(vox, n_sp)
        # rows of `spots` for each voxel: start[o] .. start[o] + n_sp
        offs = np.arange(n_sp.sum()) - np.repeat(np.cumsum(n_sp) - n_sp, n_sp)
        rows = np.repeat(start[o], n_sp) + offs
        sub = spots.take(rows)
        indptr, py, pz = spot_footprints(sub, voxel_of_spot, verts, geometry, conservative,
                                         num_threads)
        reps = np.diff(indptr)
        spot_of_entry = np.repeat(np.arange(len(sub) * nd) // nd, reps)
        dist_of_entry = np.repeat(np.arange(len(sub) * nd) % nd, reps)
        parts.append((dist_of_entry, sub.frame[spot_of_entry], py, pz,
                      voxel_of_spot[spot_of_entry]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return LitPixels(empty, empty, empty.astype(np.int32), empty.astype(np.int32), empty)
    cat = [np.concatenate(p) for p in zip(*parts)]
    return LitPixels(cat[0].astype(np.int64), cat[1].astype(np.int64), cat[2], cat[3],
                     cat[4].astype(np.int64))


def simulate_binary_images(micro: Microstructure, reflections: ReflectionList,
                           geometry: NFGeometry, n_frames: int | None = None,
                           conservative: bool = False, progress: bool = False,
                           num_threads: int = 0) -> np.ndarray:
    """Binary spot images of a microstructure at every distance, as SpotsInfo.bin words.

    Returns
    -------
    numpy.ndarray of little-endian uint32, 1D
        The lit-pixel stack of shape ``(n_distances, n_frames, NrPixelsY, NrPixelsZ)`` in
        MIDAS's SpotsInfo.bin layout (:mod:`xreduce.nf.spotsinfo`; write it with
        :func:`~xreduce.nf.spotsinfo.write_spots_info`). Spots in frames outside
        ``0..n_frames-1`` and pixels off the detector are left out.
    """
    from .spotsinfo import n_words, set_lit

    nf = default_n_frames(geometry) if n_frames is None else int(n_frames)
    if nf < 1:
        raise ValueError(f"n_frames: expected >= 1, got {nf}")
    ny, nz = geometry.detector_shape
    shape = (geometry.n_distances, nf, ny, nz)
    check_allocation(n_words(shape) * 4, "n_frames", f"lit-pixel stack {shape}")
    words = np.zeros(n_words(shape), dtype="<u4")
    lit = lit_pixels(micro, reflections, geometry, conservative, progress=progress,
                     num_threads=num_threads)
    keep = ((lit.frame >= 0) & (lit.frame < nf) & (lit.y >= 0) & (lit.y < ny)
            & (lit.z >= 0) & (lit.z < nz))
    set_lit(words, shape, lit.distance[keep], lit.frame[keep], lit.y[keep], lit.z[keep])
    return words


def unpack_image(words: np.ndarray, shape, distance: int, frame: int) -> np.ndarray:
    """One binary image ``(NrPixelsY, NrPixelsZ)`` (bool) of a lit-pixel stack of ``shape``.

    Example
    -------
    >>> from xreduce.nf.spotsinfo import pack_lit
    >>> lit = np.zeros((1, 2, 3, 4), bool); lit[0, 1, 2, 3] = True
    >>> unpack_image(pack_lit(lit), lit.shape, 0, 1)[2, 3]
    np.True_
    """
    from .spotsinfo import _check_shape, n_words

    nd, nf, ny, nz = _check_shape(shape)
    if not (0 <= int(distance) < nd and 0 <= int(frame) < nf):
        raise ValueError(f"distance, frame: expected indices inside {shape}, got "
                         f"({distance}, {frame})")
    words = np.asarray(words)
    if words.ndim != 1 or words.size != n_words(shape):
        raise ValueError(f"words: expected {n_words(shape)} uint32 words for shape {shape}, "
                         f"got {words.shape}")
    k0 = (int(distance) * nf + int(frame)) * ny * nz
    first, last = k0 // 32, (k0 + ny * nz - 1) // 32
    bits = np.unpackbits(np.ascontiguousarray(words[first:last + 1], dtype="<u4")
                         .view(np.uint8), bitorder="little")
    start = k0 - first * 32
    return bits[start:start + ny * nz].astype(bool).reshape(ny, nz)


def simulate_frames(micro: Microstructure, reflections: ReflectionList, geometry: NFGeometry,
                    frames=None, spot_counts: float = 500.0, spot_sigma_px: float = 0.7,
                    background: float = 100.0, poisson: bool = True, seed=None,
                    dtype=np.uint16, num_threads: int = 0
                    ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Realistic intensity frames, one at a time: ``(distance, frame, raw_image)``.

    Each lit footprint pixel receives ``spot_counts``, the image is blurred by a Gaussian spot
    profile of ``spot_sigma_px``, a flat ``background`` is added and, if ``poisson``, every
    pixel is drawn from a Poisson law of that mean. Images are in MIDAS's raw orientation
    (shape ``(NrPixelsZ, NrPixelsY)``, pixel ``(y, z)`` at row ``NrPixelsZ - 1 - z``, column
    ``NrPixelsY - 1 - y``), clipped to ``dtype``.

    Parameters
    ----------
    frames : iterable of int, optional
        Frame numbers to render (all frames by default).
    seed : int or Generator, optional
        Noise seed.
    """
    from scipy.ndimage import gaussian_filter

    nf = default_n_frames(geometry)
    frames = range(nf) if frames is None else [int(f) for f in frames]
    rng = np.random.default_rng(seed)
    lit = lit_pixels(micro, reflections, geometry, num_threads=num_threads)
    ny, nz = geometry.detector_shape
    key = lit.distance * (nf + 1) + lit.frame
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    for d in range(geometry.n_distances):
        for f in frames:
            k = d * (nf + 1) + f
            lo, hi = np.searchsorted(key_sorted, [k, k + 1])
            sel = order[lo:hi]
            img = np.zeros((nz, ny), dtype=np.float64)
            np.add.at(img, (nz - 1 - lit.z[sel], ny - 1 - lit.y[sel]), spot_counts)
            if spot_sigma_px > 0:
                img = gaussian_filter(img, spot_sigma_px, mode="constant")
            img += background
            if poisson:
                img = rng.poisson(img).astype(np.float64)
            if info is not None:
                img = np.clip(np.rint(img), info.min, info.max)
            yield d, f, img.astype(dtype)


def write_frames_tiff(directory: str | os.PathLike, orig_file_name: str, frames_iter,
                      frames_per_distance: int, raw_start_nr: int = 0,
                      ext: str = "tif") -> list[Path]:
    """Write frames from :func:`simulate_frames` as MIDAS's raw TIFF series.

    Frame ``f`` of distance ``d`` goes to
    ``{orig_file_name}_{d * frames_per_distance + raw_start_nr + f:06d}.{ext}`` (MIDAS's
    ``OrigFileName``, ``NrFilesPerDistance``, ``RawStartNr``, ``extOrig``), each file through
    the atomic writer.

    Example
    -------
    >>> write_frames_tiff("raw", "Au", simulate_frames(micro, refl, geo), 1440)  # doctest: +SKIP
    """
    import fabio.tifimage

    from xreduce.io.writers import atomic_output

    if int(frames_per_distance) < 1 or int(raw_start_nr) < 0:
        raise ValueError(f"frames_per_distance, raw_start_nr: expected >= 1 and >= 0, got "
                         f"{frames_per_distance}, {raw_start_nr}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for d, f, img in frames_iter:
        if not 0 <= f < frames_per_distance:
            raise ValueError(f"frames_iter: frame {f} is outside 0..{frames_per_distance - 1}")
        nr = d * int(frames_per_distance) + int(raw_start_nr) + f
        path = directory / f"{orig_file_name}_{nr:06d}.{ext}"
        with atomic_output(path) as tmp:
            fabio.tifimage.TifImage(data=img).write(tmp)
        written.append(path)
    return written


def write_raw_frames(params, frames_iter) -> list[Path]:
    """Write frames from :func:`simulate_frames` where a parameter file says its raw frames
    are (:func:`xreduce.nf.images.raw_frame_path`: DataDirectory, OrigFileName, RawStartNr,
    NrFilesPerDistance, extOrig), so that ``images.process_images(params)`` reads them.

    Example
    -------
    >>> write_raw_frames(p, simulate_frames(micro, refl, geo, seed=1))   # doctest: +SKIP
    """
    import fabio.tifimage

    from xreduce.io.writers import atomic_output

    from .images import raw_frame_path

    nf = params.frames_per_distance
    written = []
    for d, f, img in frames_iter:
        if nf is not None and not 0 <= f < nf:
            raise ValueError(f"frames_iter: frame {f} is outside 0..{nf - 1}")
        path = raw_frame_path(params, d, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            fabio.tifimage.TifImage(data=img).write(tmp)
        written.append(path)
    return written


def write_frames_hdf5(path: str | os.PathLike, frames_iter, geometry: NFGeometry,
                      n_frames: int | None = None, compression: str | None = "gzip") -> Path:
    """Write frames from :func:`simulate_frames` as a NeXus/HDF5 file.

    ``/entry/distance_{d}`` (NXdata, ``@signal`` ``data``) holds ``data`` of shape
    (n_frames, NrPixelsZ, NrPixelsY) in raw orientation and ``omega_deg`` (each frame's start)
    as its axis; the ``@default`` chain leads to distance 0. Read a distance back with the URL
    ``file.h5::/entry/distance_{d}/data`` (``RawDataURL`` of a parameter file). Written through
    the atomic writer.
    """
    import h5py

    from xreduce.io.writers import atomic_output, nexus_entry

    nf = default_n_frames(geometry) if n_frames is None else int(n_frames)
    ny, nz = geometry.detector_shape
    path = Path(path)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        entry = nexus_entry(h5, "distance_0")
        dsets = {}
        for d, f, img in frames_iter:
            if d not in dsets:
                grp = entry.require_group(f"distance_{d}")
                grp.attrs["NX_class"] = "NXdata"
                grp.attrs["signal"] = "data"
                grp.attrs["axes"] = ["omega_deg", ".", "."]
                grp.attrs["lsd_um"] = geometry.lsd_um[d]
                grp.attrs["bc_px"] = geometry.bc_px[d]
                omega = grp.create_dataset("omega_deg", data=geometry.omega_start_deg
                                           + geometry.omega_step_deg * np.arange(nf))
                omega.attrs["units"] = "degrees"  # the NeXus spelling (doc/pyfai.md, "Files")
                dsets[d] = grp.create_dataset("data", shape=(nf, nz, ny), dtype=img.dtype,
                                              chunks=(1, nz, ny), compression=compression)
                dsets[d].attrs["interpretation"] = "image"
            dsets[d][f] = img
    return path
