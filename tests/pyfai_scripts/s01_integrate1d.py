# 1D azimuthal integration as in pyFAI's "first steps" tutorial.
import os
import numpy
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

RESULTS = {}
ai = AzimuthalIntegrator(dist=0.12, poni1=0.05, poni2=0.04, rot1=0.02, rot2=-0.01,
                         detector="Pilatus300k", wavelength=1.0e-10)
print(ai)
poni_file = os.path.join(WORKDIR, "s01.poni")
ai.save(poni_file)
ai = pyFAI.load(poni_file)
tth = numpy.degrees(ai.center_array(unit="2th_rad", scale=False))
rng = numpy.random.default_rng(1)
img = rng.poisson(100 + 900 * numpy.exp(-((tth % 4.0) - 2.0) ** 2 / 0.05)).astype("int32")
res = ai.integrate1d(img, 500, unit="2th_deg", method=("full", "csr", "cython"))
tth_axis, intensity = res
print(res.unit)
RESULTS["full_csr_2th"] = res
res = ai.integrate1d(img, 300, unit="q_nm^-1", method="splitpixel")
RESULTS["splitpixel_q"] = res
res = ai.integrate1d(img, 400, unit="2th_deg", method=("no", "csr", "cython"))
RESULTS["nosplit_2th"] = res
res = ai.integrate1d(img, 400, unit="q_A^-1", method="bbox")
RESULTS["bbox_qA"] = res
res = ai.integrate1d_ng(img, 400, unit="r_mm", error_model="poisson", method=("full", "csr", "cython"))
radius, intensity, sigma = res
RESULTS["poisson_r"] = res
print(res.sigma[:3], res.sem[:3], res.std[:3], res.count[:3], res.sum_signal[:3])
res = ai.integrate1d(img, 200, unit="2th_deg", correctSolidAngle=False, polarization_factor=0.95,
                     method=("full", "csr", "cython"))
RESULTS["polarized"] = res
mask = numpy.zeros(img.shape, dtype="int8")
mask[100:150, 200:260] = 1
res = ai.integrate1d(img, 200, unit="2th_deg", mask=mask, method=("no", "csr", "cython"))
RESULTS["masked"] = res
img_dummy = img.copy()
img_dummy[300:310, :] = -1
res = ai.integrate1d(img_dummy, 200, unit="2th_deg", dummy=-1, delta_dummy=0.5,
                     method=("full", "csr", "cython"))
RESULTS["dummy"] = res
res = ai.integrate1d(img, 200, unit="2th_deg", azimuth_range=(-90, 90), method=("full", "csr", "cython"))
RESULTS["azimuth_range"] = res
res = ai.integrate1d(img, 200, unit="2th_deg", normalization_factor=2.5, method=("full", "csr", "cython"))
RESULTS["normalized"] = res
res = ai.integrate1d(img, 1000, filename=os.path.join(WORKDIR, "s01.dat"), unit="2th_deg")
print(res.method_called, res.method)
print(len(res.radial), res.intensity.max())
assert os.path.exists(os.path.join(WORKDIR, "s01.dat"))
