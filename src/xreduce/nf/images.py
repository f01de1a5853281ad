"""NF image processing: raw frames to the lit-pixel stack (MIDAS's SpotsInfo.bin).

For every detector distance, as MIDAS's ProcessImagesCombined (doc/nf.md, "Image processing"):

1. background: the per-pixel median over all frames of the distance (the lower middle value
   for an even count);
2. ``I' = max(I - background - BlanketSubtraction, 0)``;
3. a spatial median of ``(2 MedFiltRadius + 1)^2`` pixels (3x3, 5x5), the border of that width
   left unchanged (0: no filter);
4. lit pixels: ``I'' != 0``, or with ``DoLoGFilter 1`` MIDAS's spot mask: the
   Laplacian-of-Gaussian response with MIDAS's integer kernel (:func:`log_kernel`,
   ``GaussFiltRadius`` the sigma, ``LoGMaskRadius`` the radius; 0 where the kernel does not
   fit in the frame), edge pixels (``I'' != 0`` and a sign change of the response towards
   one of the 8 neighbours), then everything the edges enclose filled; as MIDAS, the union of
   that mask and the one of LoGMaskRadius 4, GaussFiltRadius 1;
5. the raw frame (rows along Z, columns along Y, both reversed) is turned to detector
   coordinates, ``y = NrPixelsY - 1 - column``, ``z = NrPixelsZ - 1 - row``, and its bits set in
   the SpotsInfo.bin layout of :mod:`xreduce.nf.spotsinfo`.

Frames stream: the background is computed in bands of detector rows (every frame's rows of
the band in memory, at most ``memory_bytes``), then the frames are read again one by one for
steps 2-5. The lit-pixel stack itself (one bit per pixel and frame) is the only large array:
for 2 x 1440 frames of 2048 x 2048 pixels it is 1.5 GB, the band buffer 256 MB by default.
With ``checkpoint_dir`` finished work is kept as it comes and an interrupted run resumes.

Inputs: MIDAS's TIFF series ``{OrigFileName}_{nr:06d}.{extOrig}`` in DataDirectory with
``nr = distance * NrFilesPerDistance + RawStartNr + frame``, or one HDF5 stack per distance
(``RawDataURL file.h5::/entry/distance_0/data`` lines, frames first, raw orientation).

Example
-------
>>> from xreduce.nf.params import read_parameters
>>> from xreduce.nf import images
>>> p = read_parameters("ps.txt")                                  # doctest: +SKIP
>>> words = images.process_images(p)                              # doctest: +SKIP
>>> images.write("SpotsInfo.bin", words)                           # doctest: +SKIP
>>> images.read("SpotsInfo.bin", p).size == words.size             # doctest: +SKIP
True
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from xreduce.limits import check_allocation, check_num_threads

from .params import NFParameters
from .spotsinfo import n_words, read_spots_info, set_lit, write_spots_info

__all__ = ["ImageProcessing", "process_images", "stack_shape", "raw_frame_path", "raw_sources",
           "frame_background", "binarize_frame", "binarize_frames", "log_kernel", "write",
           "read", "MIDAS_C_DEFAULTS", "MIDAS_SECOND_LOG"]

#: Defaults of MIDAS's C program (ProcessImagesCombined) where the parameter file is silent;
#: the manual's suggested values differ (BlanketSubtraction 4, LoGMaskRadius 10,
#: DoLoGFilter 0). We follow the program, as a MIDAS run does.
MIDAS_C_DEFAULTS = {"BlanketSubtraction": 0.0, "MedFiltRadius": 1, "DoLoGFilter": 1,
                    "LoGMaskRadius": 4, "GaussFiltRadius": 1.0}
#: (LoGMaskRadius, GaussFiltRadius) of the second LoG mask MIDAS always adds (union).
MIDAS_SECOND_LOG = (4, 1.0)


@dataclass(frozen=True)
class ImageProcessing:
    """The image-processing settings (MIDAS keys in brackets).

    Attributes
    ----------
    blanket_subtraction : float
        Subtracted after the median background (BlanketSubtraction), >= 0.
    med_filt_radius : int
        0 (none), 1 (3x3) or 2 (5x5) spatial median (MedFiltRadius).
    do_log_filter : bool
        Binarise with the Laplacian-of-Gaussian mask (DoLoGFilter).
    log_mask_radius : int
        LoG kernel radius in pixels (LoGMaskRadius).
    gauss_filt_radius : float
        LoG Gaussian sigma in pixels (GaussFiltRadius).
    """

    blanket_subtraction: float = MIDAS_C_DEFAULTS["BlanketSubtraction"]
    med_filt_radius: int = MIDAS_C_DEFAULTS["MedFiltRadius"]
    do_log_filter: bool = bool(MIDAS_C_DEFAULTS["DoLoGFilter"])
    log_mask_radius: int = MIDAS_C_DEFAULTS["LoGMaskRadius"]
    gauss_filt_radius: float = MIDAS_C_DEFAULTS["GaussFiltRadius"]

    def __post_init__(self):
        if not (np.isfinite(self.blanket_subtraction) and self.blanket_subtraction >= 0):
            raise ValueError(f"blanket_subtraction: expected a finite number >= 0, got "
                             f"{self.blanket_subtraction}")
        if self.med_filt_radius not in (0, 1, 2):
            raise ValueError(f"med_filt_radius: expected 0, 1 or 2, got {self.med_filt_radius}")
        if not 1 <= int(self.log_mask_radius) <= 1000:
            raise ValueError(f"log_mask_radius: expected 1..1000, got {self.log_mask_radius}")
        if not (np.isfinite(self.gauss_filt_radius) and self.gauss_filt_radius > 0):
            raise ValueError(f"gauss_filt_radius: expected a number > 0, got "
                             f"{self.gauss_filt_radius}")

    @classmethod
    def from_parameters(cls, params: NFParameters) -> "ImageProcessing":
        """The settings of a parameter file, MIDAS's C defaults where it is silent."""
        def pick(value, key):
            return MIDAS_C_DEFAULTS[key] if value is None else value

        return cls(blanket_subtraction=float(pick(params.blanket_subtraction,
                                                  "BlanketSubtraction")),
                   med_filt_radius=int(pick(params.med_filt_radius, "MedFiltRadius")),
                   do_log_filter=bool(pick(params.do_log_filter, "DoLoGFilter")),
                   log_mask_radius=int(pick(params.log_mask_radius, "LoGMaskRadius")),
                   gauss_filt_radius=float(pick(params.gauss_filt_radius, "GaussFiltRadius")))


def stack_shape(params: NFParameters) -> tuple[int, int, int, int]:
    """``(n_distances, n_frames, NrPixelsY, NrPixelsZ)`` of the lit-pixel stack of ``params``.

    Frames per distance: NrFilesPerDistance, else EndNr - StartNr + 1; both given, they must
    agree.
    """
    if not isinstance(params, NFParameters):
        raise TypeError(f"params: expected NFParameters, got {type(params).__name__}")
    if params.detector_shape is None:
        raise ValueError("params: NrPixels (or NrPixelsY and NrPixelsZ) is needed for the "
                         "image size")
    if (params.nr_files_per_distance is not None and params.n_frames is not None
            and params.nr_files_per_distance != params.n_frames):
        raise ValueError(f"params: NrFilesPerDistance is {params.nr_files_per_distance} but "
                         f"EndNr - StartNr + 1 is {params.n_frames}")
    nf = params.frames_per_distance
    if nf is None:
        raise ValueError("params: NrFilesPerDistance (or StartNr and EndNr) is needed for the "
                         "number of frames")
    nd = len(params.lsd_um)
    if nd < 1:
        raise ValueError("params: at least one 'Lsd' line is needed")
    return (nd, int(nf), *params.detector_shape)


# ---- frame sources ------------------------------------------------------------------------

class _TiffSeries:
    """One distance's frames as a list of image files (fabio; uncompressed TIFF row bands are
    read through tifffile's memory map, without reading whole frames)."""

    def __init__(self, files: Sequence[str]):
        self.files = list(files)
        self.description = f"{self.files[0]} .. {os.path.basename(self.files[-1])}"

    def __len__(self) -> int:
        return len(self.files)

    def frame(self, j: int) -> np.ndarray:
        import fabio

        try:
            with fabio.open(self.files[j]) as img:
                data = np.asarray(img.data)
        except Exception as exc:  # fabio raises many types for broken files
            raise ValueError(f"{self.files[j]}: cannot read this image ({exc})") from None
        return data

    def rows(self, j: int, r0: int, r1: int) -> np.ndarray:
        import tifffile

        try:
            mapped = tifffile.memmap(self.files[j], mode="r")
            return np.array(mapped[r0:r1])
        except Exception:  # compressed or not a TIFF: read the whole frame (fabio)
            return self.frame(j)[r0:r1]

    def close(self) -> None:
        pass


class _Hdf5Stack:
    """One distance's frames as an HDF5 dataset ``file.h5::/path[first:last]``."""

    def __init__(self, url: str):
        import h5py

        from xreduce.io.stacks import parse_hdf5_url

        filename, dset_path, selection = parse_hdf5_url(url)
        if len(selection) > 1 or (selection and not isinstance(selection[0], slice)):
            raise ValueError(f"RawDataURL: only a frame range [first:last] can follow the "
                             f"dataset, got {url!r}")
        import hdf5plugin  # noqa: F401  (registers the compression filters of detectors)

        if not os.path.isfile(filename):
            raise ValueError(f"RawDataURL: no file {filename!r}")
        try:
            self.file = h5py.File(filename, "r")
        except OSError as exc:
            raise ValueError(f"RawDataURL: {filename!r} is not a readable HDF5 file "
                             f"({exc})") from None
        if dset_path not in self.file or not isinstance(self.file[dset_path], h5py.Dataset):
            self.file.close()
            raise ValueError(f"RawDataURL: {filename!r} has no dataset {dset_path!r}")
        self.dataset = self.file[dset_path]
        if self.dataset.ndim != 3:
            self.file.close()
            raise ValueError(f"RawDataURL: {url!r} has {self.dataset.ndim} dimensions, expected "
                             f"3 (frames, rows, columns)")
        frames = range(self.dataset.shape[0])
        if selection:
            frames = frames[selection[0]]
        if frames.step != 1:
            self.file.close()
            raise ValueError(f"RawDataURL: a frame step is not supported, got {url!r}")
        self.first, self.n = frames.start, len(frames)
        self.description = url

    def __len__(self) -> int:
        return self.n

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.dataset.shape[1:])

    def _read(self, selection, out=None):
        try:
            if out is None:
                return self.dataset[selection]
            self.dataset.read_direct(out, selection)
            return out
        except OSError as exc:  # a damaged chunk or a missing filter
            raise ValueError(f"RawDataURL: cannot read {self.description!r} ({exc})") from None

    def frame(self, j: int) -> np.ndarray:
        return self._read(np.s_[self.first + j])

    def rows(self, j: int, r0: int, r1: int) -> np.ndarray:
        return self._read(np.s_[self.first + j, r0:r1])

    def band(self, r0: int, r1: int, out: np.ndarray) -> None:
        self._read(np.s_[self.first:self.first + self.n, r0:r1], out)

    def close(self) -> None:
        self.file.close()


def raw_frame_path(params: NFParameters, distance: int, frame: int) -> Path:
    r"""The TIFF file MIDAS opens for ``frame`` of ``distance``:
    ``{DataDirectory}/{OrigFileName}_{nr:06d}.{extOrig}``,
    ``nr = distance * NrFilesPerDistance + RawStartNr + frame`` (RawStartNr defaults to
    StartNr, then 0; extOrig to ``tif``; DataDirectory to the working folder).

    Example
    -------
    >>> import io
    >>> from xreduce.nf.params import read_parameters
    >>> p = read_parameters(io.StringIO("OrigFileName Au\nNrFilesPerDistance 1440\n"
    ...                                 "RawStartNr 5\nDataDirectory /data"), required=())
    >>> str(raw_frame_path(p, 1, 2))
    '/data/Au_001447.tif'
    """
    if not params.orig_file_name:
        raise ValueError("params: OrigFileName (TIFF series) or RawDataURL lines (HDF5) are "
                         "needed to find the raw frames")
    nf = params.frames_per_distance
    if nf is None:
        raise ValueError("params: NrFilesPerDistance (or StartNr and EndNr) is needed to "
                         "number the raw frames")
    start = params.raw_start_nr if params.raw_start_nr is not None else (params.start_nr or 0)
    nr = int(distance) * nf + start + int(frame)
    ext = params.ext_orig or "tif"
    return Path(params.data_directory or ".") / f"{params.orig_file_name}_{nr:06d}.{ext}"


def raw_sources(params: NFParameters) -> list:
    """The raw frames of each distance that ``params`` names, checked before any work.

    HDF5 stacks when the file has ``RawDataURL`` lines (one per distance), else MIDAS's TIFF
    series ``{DataDirectory}/{OrigFileName}_{nr:06d}.{extOrig}`` with
    ``nr = distance * NrFilesPerDistance + RawStartNr + frame`` (RawStartNr defaults to
    StartNr, then 0; extOrig to ``tif``).

    Raises
    ------
    ValueError
        Missing or empty files, a frame count or frame size that disagrees with the
        parameters; the message names the file.
    """
    nd, nf, ny, nz = stack_shape(params)
    if params.wf_images:
        raise ValueError(f"params: WFImages is {params.wf_images}; wide-field images between "
                         f"the NF frames are not supported (set WFImages 0)")
    if params.write_fin_image:
        warnings.warn("params: WriteFinImage is set, but xreduce writes no per-frame reduced "
                      "images (only SpotsInfo.bin)", stacklevel=2)
    sources: list = []
    if params.raw_data_urls:
        try:
            for url in params.raw_data_urls:
                src = _Hdf5Stack(url)
                sources.append(src)
                if len(src) != nf:
                    raise ValueError(f"RawDataURL: {url!r} holds {len(src)} frames but the "
                                     f"parameters give {nf} per distance")
                if src.frame_shape != (nz, ny):
                    raise ValueError(f"RawDataURL: frames of {url!r} are {src.frame_shape} "
                                     f"(rows, columns) but NrPixelsZ, NrPixelsY are "
                                     f"({nz}, {ny})")
        except BaseException:
            for src in sources:
                src.close()
            raise
        return sources
    for d in range(nd):
        files = [str(raw_frame_path(params, d, j)) for j in range(nf)]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"raw frames: {len(missing)} of the {nf} files of distance {d} are "
                             f"missing, first {missing[0]!r} (OrigFileName, RawStartNr, "
                             f"NrFilesPerDistance, extOrig, DataDirectory)")
        empty = [f for f in files if os.path.getsize(f) == 0]
        if empty:
            raise ValueError(f"raw frames: {empty[0]!r} is empty ({len(empty)} empty files)")
        series = _TiffSeries(files)
        first = series.frame(0)
        if first.shape != (nz, ny):
            raise ValueError(f"raw frames: {files[0]!r} is {first.shape} (rows, columns) but "
                             f"NrPixelsZ, NrPixelsY are ({nz}, {ny})")
        sources.append(series)
    return sources


# ---- the processing rules ------------------------------------------------------------------

def _lower_median(band: np.ndarray, out: np.ndarray, num_threads: int) -> None:
    """Per-pixel lower median over axis 0 of ``band`` (frames, rows, cols) into ``out``."""
    n, rows, cols = band.shape
    k = (n - 1) // 2
    flat = band.reshape(n, rows * cols)
    res = out.reshape(rows * cols)
    step = max(1, min(4096, -(-rows * cols // max(1, num_threads))))

    def work(c0: int) -> None:
        part = np.ascontiguousarray(flat[:, c0:c0 + step].T)  # pixels x frames
        res[c0:c0 + step] = np.partition(part, k, axis=1)[:, k]

    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        list(pool.map(work, range(0, rows * cols, step)))


def frame_background(source, *, memory_bytes: int = 256 << 20, num_threads: int = 0,
                     progress=None) -> np.ndarray:
    """The per-pixel median over all frames of one distance (lower middle value for an even
    count), in raw orientation, computed in bands of rows of at most ``memory_bytes``."""
    threads = check_num_threads(num_threads)
    first = source.frame(0)
    nz, ny = first.shape
    n = len(source)
    row_bytes = n * ny * first.itemsize
    rows = int(max(1, min(nz, memory_bytes // max(row_bytes, 1))))
    check_allocation(rows * row_bytes, "memory_bytes", f"a band of {rows} rows of {n} frames")
    background = np.empty((nz, ny), first.dtype)
    buffer = np.empty(n * rows * ny, first.dtype)
    for r0 in range(0, nz, rows):
        r1 = min(nz, r0 + rows)
        view = buffer[: n * (r1 - r0) * ny].reshape(n, r1 - r0, ny)  # C-contiguous
        if hasattr(source, "band"):
            source.band(r0, r1, view)
        else:
            for j in range(n):
                part = source.rows(j, r0, r1)
                if part.shape != (r1 - r0, ny):
                    raise ValueError(f"raw frames: frame {j} of {source.description} has a "
                                     f"different size from the first")
                view[j] = part
        _lower_median(view, background[r0:r1], threads)
        if progress is not None:
            progress.update(r1 - r0)
    return background


def _signal(frames: np.ndarray, background: np.ndarray, blanket: float) -> np.ndarray:
    """``max(I - background - blanket, 0)``, exact: uint16 for 8/16-bit unsigned frames and a
    whole-number blanket (the fast median kernel), float64 otherwise."""
    if (frames.dtype.kind == "u" and frames.dtype.itemsize <= 2
            and background.dtype == frames.dtype and float(blanket).is_integer()):
        s = frames.astype(np.int32) - background.astype(np.int32) - int(blanket)
        return np.maximum(s, 0).astype(np.uint16)
    return np.maximum(frames.astype(np.float64) - background.astype(np.float64) - blanket, 0.0)


def binarize_frames(frames: np.ndarray, background: np.ndarray, settings: ImageProcessing,
                    num_threads: int = 0) -> np.ndarray:
    """Lit pixels (bool, raw orientation) of raw frames ``(n, rows, cols)`` after background
    subtraction, spatial median and binarisation (steps 2-4 of the module notes)."""
    from xreduce.median import median_filter2d

    signal = _signal(np.asarray(frames), np.asarray(background), settings.blanket_subtraction)
    r = settings.med_filt_radius
    if r > 0:
        filtered = median_filter2d(signal, 2 * r + 1, num_threads=num_threads)
        inner = (slice(None), slice(r, -r), slice(r, -r))
        signal[inner] = filtered[inner]  # MIDAS leaves a border of width r unchanged
    if not settings.do_log_filter:
        return signal != 0
    # MIDAS takes the union of the mask of the file's LoG settings and of LoGMaskRadius 4,
    # GaussFiltRadius 1 (doc/nf.md)
    kernels = [log_kernel(settings.log_mask_radius, settings.gauss_filt_radius),
               log_kernel(*MIDAS_SECOND_LOG)]
    return np.stack([_log_spot_mask(sig, kernels[0]) | _log_spot_mask(sig, kernels[1])
                     for sig in signal])


def log_kernel(radius: int, sigma: float) -> np.ndarray:
    """MIDAS's integer Laplacian-of-Gaussian kernel, ``(2 radius + 1)^2``, int64:
    ``trunc(79720 (-1 / (pi sigma^4)) (1 - r^2 / (2 sigma^2)) exp(-r^2 / (2 sigma^2)))``
    (doc/nf.md, "Image processing"); negative at the centre."""
    offsets = np.arange(-int(radius), int(radius) + 1, dtype=np.float64)
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    s2 = sigma * sigma
    values = (79720 * (-1 / (np.pi * (sigma * sigma * sigma * sigma)))
              * (1 - r2 / (2 * s2)) * np.exp(-r2 / (2 * s2)))
    return np.trunc(values).astype(np.int64)


def _log_spot_mask(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Lit pixels of one filtered frame by MIDAS's LoG rule (step 4 of the module notes)."""
    from scipy import ndimage

    radius = kernel.shape[0] // 2
    rows, cols = signal.shape
    # exact: integer signal and kernel, sums far below 2**53
    response = ndimage.correlate(signal.astype(np.float64), kernel.astype(np.float64),
                                 mode="constant")
    inside = np.zeros(signal.shape, bool)
    inside[radius:rows - radius, radius:cols - radius] = True
    negative = (response < 0) & inside  # the response is 0 where the kernel does not fit
    edges = np.zeros(signal.shape, bool)
    centre = (slice(1, -1), slice(1, -1))
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                neighbour = negative[1 + dr:rows - 1 + dr, 1 + dc:cols - 1 + dc]
                edges[centre] |= neighbour != negative[centre]
    edges &= signal != 0
    return ndimage.binary_fill_holes(edges)


def binarize_frame(frame: np.ndarray, background: np.ndarray, settings: ImageProcessing,
                   num_threads: int = 0) -> np.ndarray:
    """:func:`binarize_frames` of one frame ``(rows, cols)``."""
    return binarize_frames(np.asarray(frame)[None], background, settings, num_threads)[0]


def _set_frame(words: np.ndarray, shape, d: int, j: int, lit_raw: np.ndarray) -> None:
    """Store one raw-orientation binary frame as bits of frame j of distance d."""
    nd, nf, ny, nz = shape
    lit_yz = lit_raw[::-1, ::-1].T  # raw (row, col) -> (y, z) = (ny-1-col, nz-1-row)
    k0 = (d * nf + j) * ny * nz
    if k0 % 8 == 0 and (ny * nz) % 8 == 0:
        packed = np.packbits(np.ascontiguousarray(lit_yz).ravel(), bitorder="little")
        words.view(np.uint8)[k0 // 8: k0 // 8 + packed.size] = packed
    else:
        y, z = np.nonzero(lit_yz)
        set_lit(words, shape, np.full(y.size, d), np.full(y.size, j), y, z)


class _Checkpoints:
    """Finished work of an interrupted :func:`process_images`, one file per piece in a folder:
    ``state.json`` (what the run is: shape, settings, inputs), ``background_{d}.npy`` and
    ``lit_{d}_{first:06d}.npy`` (lit frames ``first..`` of distance d in raw orientation, one
    packed row each). Every file goes
    through the atomic writer, so a piece is there whole or not at all."""

    def __init__(self, folder, shape, settings: ImageProcessing, sources):
        import dataclasses
        import json

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"shape": list(shape), "settings": dataclasses.asdict(settings),
                 "inputs": [s.description for s in sources]}
        path = self.folder / "state.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                saved = None
            if saved != json.loads(json.dumps(state)):
                raise ValueError(f"checkpoint_dir: {str(self.folder)!r} holds the work of "
                                 f"another image processing (other shape, settings or "
                                 f"inputs); remove it or choose another folder")
        else:
            self._save_text(path, json.dumps(state, indent=1))

    @staticmethod
    def _save_text(path: Path, text: str) -> None:
        from xreduce.io.writers import atomic_output

        with atomic_output(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

    def _save(self, name: str, array: np.ndarray) -> None:
        from xreduce.io.writers import atomic_output

        with atomic_output(self.folder / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)

    def _load(self, name: str):
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"checkpoint_dir: {str(path)!r} is damaged ({exc}); remove "
                             f"it") from None

    def background(self, d: int):
        return self._load(f"background_{d}.npy")

    def save_background(self, d: int, background: np.ndarray) -> None:
        self._save(f"background_{d}.npy", background)

    def lit(self, d: int, first: int, count: int, frame_shape):
        """The saved frames ``first .. first + count - 1`` (packed rows), or None."""
        packed = self._load(f"lit_{d}_{first:06d}.npy")
        if packed is None:
            return None
        size = frame_shape[0] * frame_shape[1]
        if packed.dtype != np.uint8 or packed.shape != (count, -(-size // 8)):
            raise ValueError(f"checkpoint_dir: lit_{d}_{first:06d}.npy does not hold "
                             f"{count} frames of {frame_shape}; remove it")
        return packed

    def save_lit(self, d: int, first: int, packed: np.ndarray) -> None:
        self._save(f"lit_{d}_{first:06d}.npy", packed)


def _pack_frame(lit_raw: np.ndarray) -> np.ndarray:
    return np.packbits(lit_raw.ravel(), bitorder="little")


def _unpack_frame(packed: np.ndarray, frame_shape) -> np.ndarray:
    size = frame_shape[0] * frame_shape[1]
    return np.unpackbits(packed, count=size, bitorder="little").astype(bool).reshape(frame_shape)


def process_images(params: NFParameters, *, progress: bool = True, num_threads: int = 0,
                   memory_bytes: int = 256 << 20, settings: ImageProcessing | None = None,
                   checkpoint_dir: str | os.PathLike | None = None,
                   checkpoint_frames: int = 64) -> np.ndarray:
    """Raw NF frames of every distance to the lit-pixel stack (SpotsInfo.bin words).

    Parameters
    ----------
    params : NFParameters
        Names the frames (:func:`raw_sources`), their count and size, and the settings
        (:meth:`ImageProcessing.from_parameters`).
    progress : bool
        A tqdm progress bar (rows of background, then frames).
    num_threads : int
        Threads (0: all cores), see :func:`xreduce.limits.check_num_threads`.
    memory_bytes : int
        Largest band of raw rows held for the background median.
    settings : ImageProcessing, optional
        Override the parameter file's settings.
    checkpoint_dir : str or path, optional
        Keep finished work there (each distance's background, lit frames in pieces of
        ``checkpoint_frames``): a run interrupted and started again with the same folder
        resumes after the last finished piece, with the same result. The folder is left in
        place (remove it once SpotsInfo.bin is written); a folder holding another run's work
        is refused.
    checkpoint_frames : int
        Frames per saved piece.

    Returns
    -------
    numpy.ndarray of little-endian uint32
        The stack of shape :func:`stack_shape` in the layout of :mod:`xreduce.nf.spotsinfo`.

    Example
    -------
    >>> words = process_images(read_parameters("ps.txt"), num_threads=2,
    ...                        checkpoint_dir="images.partial")      # doctest: +SKIP
    """
    threads = check_num_threads(num_threads)
    for name, value in (("memory_bytes", memory_bytes), ("checkpoint_frames", checkpoint_frames)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    settings = ImageProcessing.from_parameters(params) if settings is None else settings
    if not isinstance(settings, ImageProcessing):
        raise TypeError(f"settings: expected ImageProcessing, got {type(settings).__name__}")
    shape = stack_shape(params)
    nd, nf, ny, nz = shape
    check_allocation(n_words(shape) * 4, "params", f"lit-pixel stack {shape}")
    sources = raw_sources(params)
    words = np.zeros(n_words(shape), dtype="<u4")
    bar = None
    try:
        saved = (_Checkpoints(checkpoint_dir, shape, settings, sources)
                 if checkpoint_dir is not None else None)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=nd * (nz + nf), desc="NF image processing", unit="step")
        piece = int(checkpoint_frames) if saved is not None else nf
        for d, source in enumerate(sources):
            background = saved.background(d) if saved is not None else None
            if background is None:
                background = frame_background(source, memory_bytes=int(memory_bytes),
                                              num_threads=threads, progress=bar)
                if saved is not None:
                    saved.save_background(d, background)
            elif bar is not None:
                bar.update(nz)

            # frames in parallel, one per thread (a single-threaded filter per frame: no
            # thread team to wait for on a busy machine), results stored in order
            def one(j: int, source=source, background=background) -> np.ndarray:
                frame = source.frame(j)
                if frame.shape != (nz, ny):
                    raise ValueError(f"raw frames: frame {j} of {source.description} is "
                                     f"{frame.shape}, expected ({nz}, {ny})")
                return binarize_frame(frame, background, settings, num_threads=1)

            with ThreadPoolExecutor(max_workers=threads) as pool:
                for first in range(0, nf, piece):
                    count = min(nf, first + piece) - first
                    packed = (saved.lit(d, first, count, (nz, ny)) if saved is not None
                              else None)
                    if packed is not None:  # finished before an interruption
                        for i, row in enumerate(packed):
                            _set_frame(words, shape, d, first + i, _unpack_frame(row, (nz, ny)))
                        if bar is not None:
                            bar.update(count)
                        continue
                    rows = []
                    for j0 in range(first, first + count, 4 * threads):  # a few frames held
                        js = range(j0, min(first + count, j0 + 4 * threads))
                        for j, lit_raw in zip(js, pool.map(one, js)):
                            _set_frame(words, shape, d, j, lit_raw)
                            if saved is not None:
                                rows.append(_pack_frame(lit_raw))
                        if bar is not None:
                            bar.update(len(js))
                    if saved is not None:
                        saved.save_lit(d, first, np.stack(rows))
    finally:
        for source in sources:
            source.close()
        if bar is not None:
            bar.close()
    return words


def write(path: str | os.PathLike, words: np.ndarray) -> None:
    """Write the lit-pixel stack as MIDAS's ``SpotsInfo.bin`` (atomically)."""
    write_spots_info(path, words)


def read(path: str | os.PathLike, params: NFParameters) -> np.ndarray:
    """Read ``SpotsInfo.bin`` for the stack of ``params``; its size must match exactly."""
    return read_spots_info(path, stack_shape(params))
