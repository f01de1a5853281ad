"""Our integration results open in pyFAI's own NeXus readers (issue 15, pyFAI 2026.9).

What pyFAI 2026.9 has for reading NeXus (doc/pyfai.md, "Files"):

- ``pyFAI.io.nexus.Nexus``: its NeXus file class; ``get_entries`` lists the NXentry groups
  (those with a ``start_time``), ``get_default_NXdata`` follows the ``@default`` chain,
  ``get_class`` finds groups by NX_class. It applies to any NeXus file: tested here.
- ``pyFAI.gui.pilx.utils``: the readers of pyFAI's viewer (``get_signal_dataset``,
  ``get_axes_dataset``) take an NXdata's ``@signal`` and ``@axes``: tested here.
- ``pyFAI.io.nexus.load_nexus``: reads back only what pyFAI itself writes (NXmonopd and
  NXcanSAS entries with pyFAI's own NXprocess named ``pyFAI``); it has no reader for NXazint1d
  (``save_NXazint1d`` writes it), so it does not apply to our files: tested as a refusal, so
  that a pyFAI which learns to read them is noticed.
"""
import numpy as np
import pytest

pytest.importorskip("pyFAI")
from pyFAI.gui.pilx import utils as pilx_utils  # noqa: E402
from pyFAI.io.nexus import Nexus, load_nexus  # noqa: E402

from xreduce.detectors import get_detector  # noqa: E402
from xreduce.geometry import Geometry  # noqa: E402
from xreduce.integrator import AzimuthalIntegrator  # noqa: E402


@pytest.fixture(scope="module")
def integrator():
    geometry = Geometry(0.1, 0.02, 0.03, 0.0, 0.0, 0.0, 1e-10, get_detector("Pilatus 100k"))
    frame = np.random.default_rng(1).poisson(50, geometry.detector.shape).astype(np.float32)
    return AzimuthalIntegrator(geometry), frame


def test_pyfai_nexus_reader_opens_our_1d_result(integrator, tmp_path):
    ai, frame = integrator
    result = ai.integrate1d(frame, 120, unit="2th_deg", error_model="poisson")
    path = str(tmp_path / "profile.h5")
    result.save(path)
    with Nexus(path, mode="r") as nxs:
        entries = nxs.get_entries()
        assert [e.name for e in entries] == ["/entry"]
        assert entries[0]["definition"][()].decode() == "NXazint1d"
        nxdata = nxs.get_default_NXdata()
        assert nxdata is not None and nxdata.name == "/entry/data"
        assert [g.name for g in nxs.get_class(entries[0], "NXprocess")] == ["/entry/integrate"]
        assert len(nxs.get_class(entries[0], "NXinstrument")) == 1
        signal = pilx_utils.get_signal_dataset(nxdata)
        axis = pilx_utils.get_axes_dataset(nxdata, dim=0)
        np.testing.assert_array_equal(signal[()], result.intensity)
        np.testing.assert_array_equal(axis[()], result.radial)
        assert axis.attrs["units"] == "degrees"
        # the label pyFAI's viewer shows is our long_name, not the dataset's name
        assert pilx_utils.get_dataset_name(axis) == axis.attrs["long_name"] != "2th"


def test_pyfai_nexus_reader_opens_our_2d_result(integrator, tmp_path):
    ai, frame = integrator
    result = ai.integrate2d(frame, 80, 36, unit="q_nm^-1")
    path = str(tmp_path / "cake.h5")
    result.save(path)
    with Nexus(path, mode="r") as nxs:
        assert nxs.get_entries()[0]["definition"][()].decode() == "NXazint2d"
        nxdata = nxs.get_default_NXdata()
        np.testing.assert_array_equal(pilx_utils.get_signal_dataset(nxdata)[()],
                                      result.intensity)
        chi = pilx_utils.get_axes_dataset(nxdata, dim=0)
        radial = pilx_utils.get_axes_dataset(nxdata, dim=-1)
        np.testing.assert_array_equal(chi[()], result.azimuthal)
        np.testing.assert_array_equal(radial[()], result.radial)
        assert radial.attrs["units"] == "1/nm"


def test_pyfai_load_nexus_reads_only_pyfais_own_files(integrator, tmp_path):
    """pyFAI 2026.9's ``load_nexus`` looks for its own NXprocess ``pyFAI`` and knows the
    NXmonopd and NXcanSAS definitions only: it refuses ours (and would refuse an NXazint1d
    file of pyFAI's own writer too)."""
    ai, frame = integrator
    path = str(tmp_path / "profile.h5")
    ai.integrate1d(frame, 50, unit="2th_deg").save(path)
    with pytest.raises((KeyError, RuntimeError)):
        load_nexus(path)
