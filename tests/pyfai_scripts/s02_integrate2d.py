# 2D regrouping ("caking") as in pyFAI's tutorials.
import numpy
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

RESULTS = {}
det = pyFAI.detector_factory("Pilatus300k")
print(det.max_shape, det.shape, det.pixel1)
ai = AzimuthalIntegrator(dist=0.1, poni1=0.045, poni2=0.042, detector=det, wavelength=0.8e-10)
chi = numpy.degrees(ai.center_array(unit="chi_rad", scale=False))
tth = numpy.degrees(ai.center_array(unit="2th_rad", scale=False))
img = 50 + 1000 * numpy.exp(-((tth % 5.0) - 2.5) ** 2 / 0.1) * (1 + 0.5 * numpy.cos(numpy.radians(2 * chi)))
res2d = ai.integrate2d(img, 300, 72, unit="2th_deg")
I, tth_axis, chi_axis = res2d
print(I.shape, tth_axis[0], chi_axis[0], res2d.unit, res2d.azimuthal_unit)
RESULTS["default_2d"] = res2d
res2d = ai.integrate2d_ng(img, 200, 36, unit="q_nm^-1", method=("full", "csr", "cython"),
                          azimuth_range=(-180, 180))
RESULTS["full_2d_q"] = res2d
res2d = ai.integrate2d(img, 200, 36, unit="2th_deg", method=("no", "csr", "cython"))
RESULTS["no_2d"] = res2d
res2d = ai.integrate2d(img, 200, 36, unit="2th_deg", azimuth_range=(-60, 120))
RESULTS["sector_2d"] = res2d
res2d = ai.integrate2d(img, 150, 36, unit="2th_deg", error_model="poisson")
I, tth_axis, chi_axis, sigma = res2d
RESULTS["poisson_2d"] = res2d
res2d = ai.integrate2d(img, 150, 90, unit="2th_deg", azimuth_range=(-180, 180), method="csr")
RESULTS["full_circle_2d"] = res2d
print(res2d.radial.shape, res2d.azimuthal.shape, res2d.intensity.shape, res2d.count.shape)
