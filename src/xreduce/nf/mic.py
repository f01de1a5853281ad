"""MIDAS ``.mic`` text files: one line per voxel, 11 space-separated columns.

Columns (REFERENCE.md section 5): 0 orientation row number, 1 orientation id, 2 time,
3-4 X Y (um), 5 triangle edge size (um), 6 UD (+1 up, -1 down), 7-9 Euler angles phi1 Phi phi2
(radians), 10 confidence (0-1). Lines starting with ``%`` are headers; MIDAS writes
``%TriEdgeSize``, ``%NumPhases``, ``%GlobalPosition`` and a column-name line.

Example
-------
>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "demo.mic")
>>> write_mic(path, x_um=[0.0], y_um=[1.0], edge_um=2.5, ud=[1], euler_rad=[[0.1, 0.2, 0.3]])
>>> read_mic(path).euler_rad.tolist()
[[0.1, 0.2, 0.3]]
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MicData", "read_mic", "write_mic", "MIC_COLUMNS"]

MIC_COLUMNS = ("OrientationRowNr", "OrientationID", "RunTime", "X", "Y", "TriEdgeSize", "UpDown",
               "Eul1", "Eul2", "Eul3", "Confidence")


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

    def __len__(self) -> int:
        return len(self.x_um)


def read_mic(path: str | os.PathLike) -> MicData:
    """Read a MIDAS ``.mic`` text file."""
    headers: dict[str, str] = {}
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            s = line.strip()
            if not s:
                continue
            if s.startswith("%"):
                parts = s[1:].split(None, 1)
                if parts and len(parts) == 2 and parts[0] not in MIC_COLUMNS:
                    headers[parts[0]] = parts[1]
                continue
            vals = s.split()
            if len(vals) < 11:
                raise ValueError(f"{path}:{lineno}: expected 11 columns in a .mic line, got "
                                 f"{len(vals)}")
            try:
                rows.append([float(v) for v in vals[:11]])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: non-numeric value in {s!r}") from None
    data = np.array(rows, dtype=np.float64).reshape(-1, 11)
    return MicData(row=data[:, 0].astype(np.int64), orientation_id=data[:, 1].astype(np.int64),
                   time=data[:, 2], x_um=data[:, 3], y_um=data[:, 4], edge_um=data[:, 5],
                   ud=np.rint(data[:, 6]).astype(np.int8), euler_rad=data[:, 7:10],
                   confidence=data[:, 10], headers=headers)


def write_mic(path: str | os.PathLike, x_um, y_um, edge_um, ud, euler_rad, confidence=1.0,
              row=0, orientation_id=0, time=0.0, num_phases: int = 1,
              global_position: float = 0.0) -> None:
    """Write a MIDAS ``.mic`` text file (temporary name, then rename).

    Scalars broadcast over voxels. Euler angles in radians (Bunge phi1, Phi, phi2).
    """
    x = np.asarray(x_um, dtype=np.float64)
    n = len(x)
    cols = [np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
            for v in (row, orientation_id, time, x, y_um, edge_um, ud)]
    eul = np.asarray(euler_rad, dtype=np.float64)
    if eul.shape != (n, 3):
        raise ValueError(f"euler_rad: expected shape ({n}, 3), got {eul.shape}")
    conf = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (n,))
    edge0 = float(np.broadcast_to(np.asarray(edge_um, dtype=np.float64), (max(n, 1),))[0])
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as f:
        f.write(f"%TriEdgeSize {edge0:.6f}\n%NumPhases {num_phases}\n"
                f"%GlobalPosition {global_position:.6f}\n%" + " ".join(MIC_COLUMNS) + "\n")
        for i in range(n):
            f.write("%d %d %f %.6f %.6f %.6f %d %.9f %.9f %.9f %.6f\n" % (
                cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i],
                cols[6][i], eul[i, 0], eul[i, 1], eul[i, 2], conf[i]))
    os.replace(tmp, path)
