"""Results of an integration: intensities, uncertainties, the per-bin sums and the metadata.

``Integrate1dResult`` holds a radial (or, for ``integrate_radial``, azimuthal) profile;
``Integrate2dResult`` a cake of shape ``(npt_azim, npt_rad)``. For a stack of frames every
per-bin array gets a leading frame axis. Bins that received no pixel have ``count == 0`` and
the ``empty`` value (NaN unless asked otherwise) as intensity, sigma and std.

Example
-------
>>> import numpy as np
>>> r = Integrate1dResult(radial=np.array([1.0, 2.0]), intensity=np.array([3.0, 4.0]),
...                       sigma=None, std=None, sum_signal=np.array([3.0, 4.0]),
...                       sum_variance=None, sum_normalization=np.ones(2),
...                       sum_normalization2=np.ones(2), count=np.ones(2), unit="q_nm^-1",
...                       method=("bbox", "csr", "cython"), error_model=None)
>>> r.intensity
array([3., 4.])
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _unit_name(unit: Any) -> str:
    return getattr(unit, "name", str(unit))


def _unit_label(unit: Any) -> str:
    return getattr(unit, "label", _unit_name(unit))


def _atomic_path(path: str) -> str:
    """A temporary file name in the same folder as ``path`` (for write-then-rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    return tmp


@dataclass(frozen=True)
class _Result:
    radial: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray | None
    std: np.ndarray | None
    sum_signal: np.ndarray
    sum_variance: np.ndarray | None
    sum_normalization: np.ndarray
    sum_normalization2: np.ndarray
    count: np.ndarray
    unit: Any
    method: tuple[str, str, str]
    error_model: str | None
    geometry: Any = None
    options: dict = field(default_factory=dict)

    def _header(self) -> dict:
        """Geometry and options as a JSON-friendly dict, for file headers."""
        head: dict[str, Any] = {"method": list(self.method), "error_model": self.error_model,
                                "unit": _unit_name(self.unit)}
        g = self.geometry
        if g is not None:
            for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
                head[name] = float(getattr(g, name))
            det = g.detector
            head["detector"] = {"name": det.name, "pixel1": float(det.pixel1),
                                "pixel2": float(det.pixel2), "shape": list(det.shape)}
        for key, value in self.options.items():
            head[key] = value if isinstance(value, (str, int, float, bool, type(None), list)) \
                else repr(value)
        return head

    def _write_h5(self, path: str, axes: list[tuple[str, np.ndarray, str]]) -> None:
        import h5py

        tmp = _atomic_path(path)
        try:
            with h5py.File(tmp, "w") as h5:
                entry = h5.create_group("entry")
                entry.attrs["NX_class"] = "NXentry"
                h5.attrs["default"] = "entry"
                entry.attrs["default"] = "integrate"
                entry["program_name"] = "xreduce"
                entry["header"] = json.dumps(self._header())
                nxdata = entry.create_group("integrate")
                nxdata.attrs["NX_class"] = "NXdata"
                nxdata.attrs["signal"] = "intensity"
                frame_axes = ["frame"] if self.intensity.ndim > len(axes) else []
                if frame_axes:
                    nxdata["frame"] = np.arange(self.intensity.shape[0])
                nxdata.attrs["axes"] = frame_axes + [name for name, _, _ in axes]
                for name, values, units in axes:
                    nxdata[name] = values
                    nxdata[name].attrs["units"] = units
                nxdata["intensity"] = self.intensity
                if self.sigma is not None:
                    nxdata["intensity_errors"] = self.sigma
                for name in ("sum_signal", "sum_variance", "sum_normalization",
                             "sum_normalization2", "count", "std"):
                    value = getattr(self, name)
                    if value is not None:
                        nxdata[name] = value
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _write_text(self, path: str, table: np.ndarray, columns: str) -> None:
        lines = [f"{k}: {json.dumps(v)}" for k, v in self._header().items()]
        tmp = _atomic_path(path)
        try:
            np.savetxt(tmp, table, header="\n".join(lines + [columns]))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@dataclass(frozen=True)
class Integrate1dResult(_Result):
    """A 1D profile: ``intensity[..., npt]`` against ``radial`` (bin centres in ``unit``).

    ``sigma`` is the standard error of the mean, ``std`` the spread of the pixels; both are
    None without an error model. ``sum_*`` and ``count`` are the per-bin sums they come from.
    """

    def save(self, path: str) -> None:
        """Write to ``path``: ``.h5``/``.nxs`` (NeXus NXdata) or text (``.dat`` and others).

        Text: a ``#`` header with the geometry and options (one ``key: json`` per line), then
        columns radial, intensity[, sigma] (one intensity/sigma pair per frame for a stack),
        readable with ``numpy.loadtxt``. Both are written to a temporary name and renamed.
        """
        unit = _unit_name(self.unit)
        if path.endswith((".h5", ".hdf5", ".nxs")):
            self._write_h5(path, [(unit.split("_")[0], self.radial, unit)])
            return
        intensity = np.atleast_2d(self.intensity)
        cols = [self.radial]
        names = [unit]
        for i in range(intensity.shape[0]):
            cols.append(intensity[i])
            names.append(f"I_{i}" if intensity.shape[0] > 1 else "I")
            if self.sigma is not None:
                cols.append(np.atleast_2d(self.sigma)[i])
                names.append(f"sigma_{i}" if intensity.shape[0] > 1 else "sigma")
        self._write_text(path, np.column_stack(cols), " ".join(names))

    def plot(self, ax: Any = None, frame: int = 0) -> Any:
        """Plot the profile (with error bars when sigma exists) with matplotlib; return the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.figure().add_subplot()
        y = self.intensity if self.intensity.ndim == 1 else self.intensity[frame]
        err = None if self.sigma is None else (
            self.sigma if self.sigma.ndim == 1 else self.sigma[frame])
        ax.errorbar(self.radial, y, yerr=err, lw=0.8, elinewidth=0.5)
        ax.set_xlabel(_unit_label(self.unit))
        ax.set_ylabel("intensity")
        return ax


@dataclass(frozen=True)
class Integrate2dResult(_Result):
    """A cake: ``intensity[..., npt_azim, npt_rad]``; ``azimuthal`` bin centres in degrees."""

    azimuthal: np.ndarray = None
    azimuthal_unit: str = "chi_deg"

    def save(self, path: str) -> None:
        """Write to ``path``: ``.h5``/``.nxs`` (NeXus NXdata) or text (one frame only).

        Text: header, then one row per azimuthal bin: chi followed by the intensities of the
        radial bins (the radial centres are in the last header line); ``numpy.loadtxt`` gives
        an array (npt_azim, 1 + npt_rad).
        """
        unit = _unit_name(self.unit)
        if path.endswith((".h5", ".hdf5", ".nxs")):
            self._write_h5(path, [("chi", self.azimuthal, "deg"),
                                  (unit.split("_")[0], self.radial, unit)])
            return
        if self.intensity.ndim != 2:
            raise ValueError("save: a stack of cakes can only be written to HDF5 (.h5), "
                             f"got path {path!r}")
        table = np.column_stack([self.azimuthal, self.intensity])
        radial = " ".join(f"{r:.8g}" for r in self.radial)
        self._write_text(path, table, f"chi_deg then I at {unit} = {radial}")

    def plot(self, ax: Any = None, frame: int = 0) -> Any:
        """Show the cake with matplotlib (radial horizontal, chi vertical); return the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.figure().add_subplot()
        img = self.intensity if self.intensity.ndim == 2 else self.intensity[frame]
        r, c = self.radial, self.azimuthal
        ax.imshow(img, origin="lower", aspect="auto", interpolation="nearest",
                  extent=(r[0], r[-1], c[0], c[-1]))
        ax.set_xlabel(_unit_label(self.unit))
        ax.set_ylabel(r"$\chi$ (deg)")
        return ax
