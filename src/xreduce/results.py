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
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _unit_name(unit: Any) -> str:
    return getattr(unit, "name", str(unit))


def _unit_label(unit: Any) -> str:
    return getattr(unit, "label", _unit_name(unit))


# NeXus spellings of the units of the axes (doc/pyfai.md, "Files").
_NEXUS_UNITS = {"2th_deg": "degrees", "2th_rad": "rad", "q_nm^-1": "1/nm",
                "q_A^-1": "1/angstrom", "r_mm": "mm", "r_m": "m", "d*2_A^-2": "1/angstrom^2",
                "chi_deg": "degrees", "chi_rad": "rad"}


def _nexus_units(unit: Any) -> str:
    return _NEXUS_UNITS.get(_unit_name(unit), _unit_name(unit))


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

    def _write_h5(self, path: str, axes: list[tuple[str, np.ndarray, Any]]) -> None:
        """NeXus file in pyFAI's NXazint1d/NXazint2d-like layout (doc/pyfai.md, "Files").

        /entry (NXentry, @default=data) holds ``program_name``, ``integrate`` (NXprocess: the
        PONI, method and options as JSON, ``sequence_index``), ``instrument`` (NXinstrument:
        wavelength, NXdetector) and ``data`` (NXdata: ``intensity`` with ``long_name`` and
        units, ``intensity_errors``, axes in NeXus units, and the per-bin sums).
        """
        import datetime

        import h5py

        from xreduce.io.writers import atomic_output, nexus_entry

        header = self._header()
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
            entry = nexus_entry(h5, "data")
            entry["program_name"] = "xreduce"
            entry["definition"] = "NXazint2d" if len(axes) == 2 else "NXazint1d"
            # NXentry's start_time: pyFAI's NeXus reader lists only entries that have one
            entry["start_time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
            process = entry.create_group("integrate")
            process.attrs["NX_class"] = "NXprocess"
            process["program"] = "xreduce"
            process["sequence_index"] = 1
            process["method"] = "_".join(self.method)
            process["configuration"] = json.dumps(header)
            process["configuration"].attrs["format"] = "json"
            g = self.geometry
            if g is not None:
                from xreduce.poni import poni_text

                process["poni"] = poni_text(g)
                instrument = entry.create_group("instrument")
                instrument.attrs["NX_class"] = "NXinstrument"
                if g.wavelength is not None:
                    source = instrument.create_group("monochromator")
                    source.attrs["NX_class"] = "NXmonochromator"
                    source["wavelength"] = g.wavelength * 1e10
                    source["wavelength"].attrs["units"] = "angstrom"
                g.detector.write_nexus(instrument, "detector")
                det = instrument["detector"]
                det["distance"] = g.dist
                det["distance"].attrs["units"] = "m"
            nxdata = entry.create_group("data")
            nxdata.attrs["NX_class"] = "NXdata"
            nxdata.attrs["signal"] = "intensity"
            frame_axes = ["frame"] if self.intensity.ndim > len(axes) else []
            if frame_axes:
                nxdata["frame"] = np.arange(self.intensity.shape[0])
            nxdata.attrs["axes"] = frame_axes + [name for name, _, _ in axes]
            for name, values, unit in axes:
                nxdata[name] = values
                nxdata[name].attrs["units"] = _nexus_units(unit)
                nxdata[name].attrs["long_name"] = _unit_label(unit)
            nxdata["intensity"] = self.intensity
            nxdata["intensity"].attrs["long_name"] = "Intensity"
            nxdata["intensity"].attrs["units"] = "arbitrary units"
            nxdata["intensity"].attrs["interpretation"] = "image" if len(axes) == 2 \
                else "spectrum"
            if self.sigma is not None:
                nxdata["intensity_errors"] = self.sigma
                nxdata["intensity_errors"].attrs["doc"] = "standard error of the mean"
            for name in ("sum_signal", "sum_variance", "sum_normalization",
                         "sum_normalization2", "count", "std"):
                value = getattr(self, name)
                if value is not None:
                    nxdata[name] = value

    def _write_text(self, path: str, table: np.ndarray, columns: str) -> None:
        from xreduce.io.writers import atomic_output

        lines = [f"{k}: {json.dumps(v)}" for k, v in self._header().items()]
        with atomic_output(path) as tmp:
            np.savetxt(tmp, table, header="\n".join(lines + [columns]))


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
            self._write_h5(path, [(unit.split("_")[0], self.radial, self.unit)])
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
            self._write_h5(path, [("chi", self.azimuthal, self.azimuthal_unit),
                                  (unit.split("_")[0], self.radial, self.unit)])
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
