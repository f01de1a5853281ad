"""MIDAS ``.mic`` files: the text mic (12 tab-separated columns) and MicFileBinary.

Text mic (doc/nf.md, "Orientation maps"): four header lines starting with ``%``
(``%TriEdgeSize``, ``%NumPhases``, ``%GlobalPosition``, the column names), then one line per
voxel of 12 tab-separated columns, the first 11 printed ``%f`` and the last an integer:
0 orientation row number (winning seed), 1 orientation id (MIDAS: number of screening
survivors), 2 fit time (s), 3-4 X Y (um), 5 triangle edge size (um), 6 UD (+1 up, -1 down),
7-9 Euler angles phi1 Phi phi2 (radians), 10 confidence (0-1), 11 PhaseNr. Voxels of confidence
0 are not written, as MIDAS does. :func:`read_mic` reads these files and our older 11-column,
space-separated ones (PhaseNr 1).

MicFileBinary: 11 little-endian float64 per voxel (the 11 first columns above, in that order),
every voxel of the grid, unfit ones all zero.

Example
-------
>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "demo.mic")
>>> write_mic(path, x_um=[0.0], y_um=[1.0], edge_um=2.5, ud=[1], euler_rad=[[0.1, 0.2, 0.3]])
>>> read_mic(path).euler_rad.tolist()
[[0.1, 0.2, 0.3]]
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from xreduce.limits import check_allocation

__all__ = ["MicData", "read_mic", "write_mic", "write_mic_binary", "read_mic_binary",
           "MIC_COLUMNS"]

MIC_COLUMNS = ("OrientationRowNr", "OrientationID", "RunTime", "X", "Y", "TriEdgeSize", "UpDown",
               "Eul1", "Eul2", "Eul3", "Confidence", "PhaseNr")

#: Largest row number / candidate count accepted from a file (C ``int`` in MIDAS).
_INT_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class MicData:
    """Contents of a ``.mic`` file (arrays of length n) and its ``%Key value`` headers."""

    row: np.ndarray
    orientation_id: np.ndarray
    time: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    edge_um: np.ndarray
    ud: np.ndarray
    euler_rad: np.ndarray
    confidence: np.ndarray
    headers: dict
    phase_nr: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x_um)


def _check_rows(data: np.ndarray, where) -> None:
    """Values of a mic table a map can hold; ``where(i)`` names row i for messages."""
    finite = np.isfinite(data)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValueError(f"{where(i)}: column {MIC_COLUMNS[j]} is {data[i, j]}, expected a "
                         f"finite number")
    checks = [
        (0, lambda c: (c >= 0) & (c <= _INT_LIMIT) & (c == np.rint(c)),
         "a whole number in 0..2^31-1"),
        (1, lambda c: (c >= -1) & (c <= _INT_LIMIT) & (c == np.rint(c)),
         "a whole number in -1..2^31-1"),
        (5, lambda c: c >= 0, ">= 0"),
        (6, lambda c: (c == 1) | (c == -1) | (c == 0), "+1 (up) or -1 (down)"),
        (10, lambda c: (c >= 0) & (c <= 1), "in [0, 1]"),
    ]
    if data.shape[1] > 11:
        checks.append((11, lambda c: (c >= 0) & (c <= _INT_LIMIT) & (c == np.rint(c)),
                       "a whole number in 0..2^31-1"))
    for j, rule, expected in checks:
        bad = ~rule(data[:, j])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where(i)}: column {MIC_COLUMNS[j]} is {data[i, j]}, expected "
                             f"{expected}")


def _mic_data(data: np.ndarray, headers: dict) -> MicData:
    phase = (data[:, 11].astype(np.int64) if data.shape[1] > 11
             else np.ones(len(data), np.int64))
    return MicData(row=data[:, 0].astype(np.int64), orientation_id=data[:, 1].astype(np.int64),
                   time=data[:, 2], x_um=data[:, 3], y_um=data[:, 4], edge_um=data[:, 5],
                   ud=np.rint(data[:, 6]).astype(np.int8), euler_rad=data[:, 7:10],
                   confidence=data[:, 10], headers=headers, phase_nr=phase)


def read_mic(path: str | os.PathLike) -> MicData:
    """Read a text ``.mic`` file: MIDAS's (12 tab-separated columns) or our older 11-column one.

    Raises
    ------
    ValueError
        Naming the file and line: a line with too few columns or a non-numeric value, a NaN or
        infinite value, a row number that is not a whole number, UpDown other than +-1,
        confidence outside [0, 1], bytes that are not UTF-8 text.

    Example
    -------
    >>> mic = read_mic("Au_txt_Reconstructed.mic")          # doctest: +SKIP
    >>> mic.euler_rad.shape                                 # doctest: +SKIP
    (3456, 3)
    """
    name = os.fspath(path)
    try:
        text = open(path, "rb").read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: .mic file is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    headers: dict[str, str] = {}
    rows = []
    linenos = []
    n_cols = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("%"):
            parts = s[1:].split(None, 1)
            if len(parts) == 2 and parts[0] not in MIC_COLUMNS:
                headers[parts[0]] = parts[1]
            continue
        vals = s.split()
        if len(vals) < 11:
            raise ValueError(f"{name}:{lineno}: expected 11 or 12 columns in a .mic line, got "
                             f"{len(vals)}")
        width = 12 if len(vals) >= 12 else 11
        if n_cols is None:
            n_cols = width
        elif width != n_cols:
            raise ValueError(f"{name}:{lineno}: {len(vals)} columns, but earlier lines have "
                             f"{n_cols}")
        try:
            rows.append([float(v) for v in vals[:width]])
        except ValueError:
            raise ValueError(f"{name}:{lineno}: non-numeric value in {s[:80]!r}") from None
        linenos.append(lineno)
    n_cols = n_cols or 12
    check_allocation(len(rows) * n_cols * 8, "path", f"{len(rows)} .mic rows")
    data = np.array(rows, dtype=np.float64).reshape(-1, n_cols)
    _check_rows(data, lambda i: f"{name}:{linenos[i]}")
    return _mic_data(data, headers)


def _columns(n, x_um, y_um, edge_um, ud, euler_rad, confidence, row, orientation_id, time):
    """The 11 MIDAS columns as an (n, 11) float64 table; scalars broadcast."""
    eul = np.asarray(euler_rad, dtype=np.float64)
    if eul.shape != (n, 3):
        raise ValueError(f"euler_rad: expected shape ({n}, 3), got {eul.shape}")
    table = np.empty((n, 11), np.float64)
    for j, (name, v) in enumerate((("row", row), ("orientation_id", orientation_id),
                                   ("time", time), ("x_um", x_um), ("y_um", y_um),
                                   ("edge_um", edge_um), ("ud", ud))):
        try:
            table[:, j] = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
        except ValueError:
            raise ValueError(f"{name}: expected a scalar or {n} values, got shape "
                             f"{np.shape(v)}") from None
    table[:, 7:10] = eul
    try:
        table[:, 10] = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (n,))
    except ValueError:
        raise ValueError(f"confidence: expected a scalar or {n} values, got shape "
                         f"{np.shape(confidence)}") from None
    _check_rows(table, lambda i: f"voxel {i}")
    return table


def write_mic(path: str | os.PathLike, x_um, y_um, edge_um, ud, euler_rad, confidence=1.0,
              row=0, orientation_id=0, time=0.0, num_phases: int = 1,
              global_position: float = 0.0, *, phase_nr=1) -> None:
    """Write MIDAS's text ``.mic`` (temporary name, then rename).

    Scalars broadcast over voxels. Voxels of confidence 0 are left out, as MIDAS does.

    Parameters
    ----------
    path : str or path
    x_um, y_um : array_like
        Voxel positions (um).
    edge_um : float or array_like
        Triangle edge size (um); the first one goes into ``%TriEdgeSize``.
    ud : array_like
        +1 up, -1 down triangles.
    euler_rad : array_like (n, 3)
        Bunge Euler angles phi1, Phi, phi2 in radians.
    confidence : float or array_like
        0-1.
    row : int or array_like
        Orientation row number (the winning seed).
    orientation_id : int or array_like
        MIDAS writes the number of screening survivors (candidates) here.
    time : float or array_like
        Fit time per voxel (s).
    num_phases, global_position : header values.
    phase_nr : int or array_like
        The twelfth column.

    Example
    -------
    >>> write_mic("map.mic", [0.0], [0.0], 2.5, [1], [[0.1, 0.2, 0.3]], 0.9)  # doctest: +SKIP
    """
    from xreduce.io.writers import atomic_output

    x = np.asarray(x_um, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x_um: expected a 1D array, got shape {x.shape}")
    n = len(x)
    table = _columns(n, x, y_um, edge_um, ud, euler_rad, confidence, row, orientation_id, time)
    phase = np.broadcast_to(np.asarray(phase_nr), (n,)).astype(np.int64)
    edge0 = float(table[0, 5]) if n else float(np.asarray(edge_um, np.float64).ravel()[0])
    if not (math.isfinite(float(global_position)) and int(num_phases) >= 1):
        raise ValueError(f"num_phases, global_position: expected >= 1 and finite, got "
                         f"{num_phases}, {global_position}")
    keep = table[:, 10] != 0
    lines = [f"%TriEdgeSize {edge0:f}\n", f"%NumPhases {int(num_phases)}\n",
             f"%GlobalPosition {float(global_position):f}\n",
             "%" + "\t".join(MIC_COLUMNS) + "\n"]
    fmt = "\t".join(["%f"] * 11) + "\t%d\n"
    lines += [fmt % (*table[i], phase[i]) for i in np.flatnonzero(keep)]
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)


def write_mic_binary(path: str | os.PathLike, x_um, y_um, edge_um, ud, euler_rad,
                     confidence=1.0, row=0, orientation_id=0, time=0.0) -> None:
    """Write MIDAS's ``MicFileBinary``: 11 little-endian float64 per voxel, every voxel.

    Same arguments as :func:`write_mic`; here ``edge_um`` is what MIDAS stores in column 5
    (its FitOrientation writes twice the half-edge ``gs`` of grid.txt, i.e. the edge).

    Example
    -------
    >>> write_mic_binary("map.bin", [0.0], [0.0], 2.5, [1], [[0.1, 0.2, 0.3]])  # doctest: +SKIP
    """
    from xreduce.io.writers import atomic_output

    x = np.asarray(x_um, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x_um: expected a 1D array, got shape {x.shape}")
    table = _columns(len(x), x, y_um, edge_um, ud, euler_rad, confidence, row, orientation_id,
                     time)
    with atomic_output(path) as tmp:
        table.astype("<f8").tofile(tmp)


def read_mic_binary(path: str | os.PathLike) -> MicData:
    """Read MIDAS's ``MicFileBinary`` (11 float64 per voxel); all-zero rows (voxels never fit)
    are kept, with confidence 0.

    Raises
    ------
    ValueError
        A size that is not a whole number of 88-byte rows, or values a map cannot hold (NaN,
        UpDown other than +-1 or 0, confidence outside [0, 1]); the message names the file and
        the voxel.
    """
    name = os.fspath(path)
    size = os.path.getsize(path)
    if size % 88:
        raise ValueError(f"{name}: MicFileBinary holds 11 float64 (88 bytes) per voxel, but "
                         f"its size {size} is not a multiple of 88")
    check_allocation(size, "path", "MicFileBinary rows")
    data = np.fromfile(path, dtype="<f8").reshape(-1, 11).astype(np.float64)
    _check_rows(data, lambda i: f"{name}: voxel {i}")
    return _mic_data(data, {})
