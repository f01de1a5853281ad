# Detectors and PONI files: the way beamline scripts set them up.
import os
import numpy
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

RESULTS = {}
for name in ("Pilatus1M", "Eiger2_CdTe_1M", "Lambda750k", "Maxipix2x2", "Xpad_flat"):
    det = pyFAI.detector_factory(name)
    print(name, det.shape, int(numpy.asarray(det.mask).sum()))
det = pyFAI.detector_factory("Eiger2_CdTe_1M")
ai = AzimuthalIntegrator(dist=0.15, poni1=0.04, poni2=0.038, detector=det, wavelength=0.7e-10)
ai.save(os.path.join(WORKDIR, "s05.poni"))
ai = pyFAI.load(os.path.join(WORKDIR, "s05.poni"))
print(ai.detector.name, ai.detector.shape)
img = numpy.random.default_rng(5).poisson(30, ai.detector.shape).astype("uint32")
img[ai.detector.mask.astype(bool)] = 2 ** 32 - 1
res = ai.integrate1d(img, 300, unit="q_nm^-1", method=("full", "csr", "cython"))
RESULTS["eiger2cdte_full"] = res
res = ai.integrate1d(img, 300, unit="q_nm^-1", method=("no", "histogram", "cython"))
RESULTS["eiger2cdte_nosplit_hist"] = res
