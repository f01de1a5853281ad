"""Simulated NF-HEDM data: binary spot images and intensity frames from a microstructure.

Every voxel diffracts along the spots of its orientation; each spot lights the voxel's polygon
(triangle) projected through the diffracted ray onto every detector distance (see
:mod:`xreduce.nf.spots`), in the frame of its omega.

Binary images (what the orientation fit reads) are bit-packed:
``packed[d, frame, y, z // 8]``, bit ``7 - z % 8`` (``numpy.packbits(image, axis=-1)``, big
bit order), shape ``(n_distances, n_frames, NrPixelsY, ceil(NrPixelsZ / 8))``, so a pixel's
bits are indexed like MIDAS's ``y * NrPixelsZ + z`` (z the fast axis). :func:`unpack_image`
undoes it for one frame.

Intensity frames are written in the detector's raw orientation, rows along Z and columns along Y
(``frame[z, y]``), as TIFF (fabio) or HDF5 (one dataset per distance, frames first).

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
>>> packed = simulate_binary_images(micro, refl, geo, n_frames=360)
>>> packed.shape
(1, 360, 256, 32)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .crystal import euler_to_matrix
from .microstructure import Microstructure
from .reflections import ReflectionList
from .spots import NFGeometry, predict_spots, spot_footprints

__all__ = ["LitPixels", "lit_pixels", "simulate_binary_images", "unpack_image",
           "simulate_frames", "write_frames_tiff", "write_frames_hdf5", "default_n_frames"]


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
    """Bit-packed binary spot images of a microstructure at every distance.

    Returns
    -------
    numpy.ndarray uint8, shape (n_distances, n_frames, NrPixelsY, ceil(NrPixelsZ / 8))
        ``packed[d, f, y, z >> 3] >> (7 - (z & 7)) & 1`` is pixel (y, z) of frame f on
        distance d. Spots in frames outside ``0..n_frames-1`` are left out.
    """
    from xreduce.ext import nf_spots as _ext

    nf = default_n_frames(geometry) if n_frames is None else int(n_frames)
    if nf < 1:
        raise ValueError(f"n_frames: expected >= 1, got {nf}")
    ny, nz = geometry.detector_shape
    packed = np.zeros((geometry.n_distances, nf, ny, (nz + 7) // 8), dtype=np.uint8)
    lit = lit_pixels(micro, reflections, geometry, conservative, progress=progress,
                     num_threads=num_threads)
    _ext.set_bits(packed, np.ascontiguousarray(lit.distance), np.ascontiguousarray(lit.frame),
                  np.ascontiguousarray(lit.y, dtype=np.int32),
                  np.ascontiguousarray(lit.z, dtype=np.int32))
    return packed


def unpack_image(packed: np.ndarray, distance: int, frame: int, nz: int) -> np.ndarray:
    """One binary image (NrPixelsY, NrPixelsZ) of uint8 0/1 from the packed stack."""
    return np.unpackbits(packed[distance, frame], axis=-1, count=nz)


def simulate_frames(micro: Microstructure, reflections: ReflectionList, geometry: NFGeometry,
                    frames=None, spot_counts: float = 500.0, spot_sigma_px: float = 0.7,
                    background: float = 100.0, poisson: bool = True, seed=None,
                    dtype=np.uint16, num_threads: int = 0
                    ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Realistic intensity frames, one at a time: ``(distance, frame, image[z, y])``.

    Each lit footprint pixel receives ``spot_counts``, the image is blurred by a Gaussian spot
    profile of ``spot_sigma_px``, a flat ``background`` is added and, if ``poisson``, every
    pixel is drawn from a Poisson law of that mean. Images are in raw orientation (rows Z,
    columns Y), clipped to ``dtype``.

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
            np.add.at(img, (lit.z[sel], lit.y[sel]), spot_counts)
            if spot_sigma_px > 0:
                img = gaussian_filter(img, spot_sigma_px, mode="constant")
            img += background
            if poisson:
                img = rng.poisson(img).astype(np.float64)
            if info is not None:
                img = np.clip(np.rint(img), info.min, info.max)
            yield d, f, img.astype(dtype)


def write_frames_tiff(directory: str | os.PathLike, stem: str, frames_iter,
                      first_number: int = 0) -> list[Path]:
    """Write frames from :func:`simulate_frames` as TIFF files
    ``{stem}_d{distance}_{first_number + frame:06d}.tif`` (each via a temporary name)."""
    import fabio.tifimage

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for d, f, img in frames_iter:
        path = directory / f"{stem}_d{d}_{first_number + f:06d}.tif"
        tmp = path.with_name(path.name + ".part")
        fabio.tifimage.TifImage(data=img).write(str(tmp))
        os.replace(tmp, path)
        written.append(path)
    return written


def write_frames_hdf5(path: str | os.PathLike, frames_iter, geometry: NFGeometry,
                      n_frames: int | None = None, compression: str | None = "gzip") -> Path:
    """Write frames from :func:`simulate_frames` to HDF5: dataset ``/distance_{d}/data`` of
    shape (n_frames, NrPixelsZ, NrPixelsY) per distance, with ``omega_deg`` of each frame start.
    Written to a temporary name and renamed when complete."""
    import h5py

    nf = default_n_frames(geometry) if n_frames is None else int(n_frames)
    ny, nz = geometry.detector_shape
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        dsets = {}
        for d, f, img in frames_iter:
            if d not in dsets:
                grp = h5.require_group(f"distance_{d}")
                grp.attrs["lsd_um"] = geometry.lsd_um[d]
                grp.attrs["bc_px"] = geometry.bc_px[d]
                grp["omega_deg"] = (geometry.omega_start_deg
                                    + geometry.omega_step_deg * np.arange(nf))
                dsets[d] = grp.create_dataset("data", shape=(nf, nz, ny), dtype=img.dtype,
                                              chunks=(1, nz, ny), compression=compression)
            dsets[d][f] = img
    os.replace(tmp, path)
    return path
