# Sigma clipping, median filter and Bragg / amorphous separation (pyFAI's "separate" recipe).
import numpy
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

FILTERS = {}
ai = AzimuthalIntegrator(dist=0.1, poni1=0.02, poni2=0.04, detector="Pilatus100k", wavelength=1e-10)
rng = numpy.random.default_rng(4)
img = rng.poisson(200, ai.detector.shape).astype("float32")
img[rng.random(img.shape) < 0.002] = 50000
clipped = ai.sigma_clip_ng(img, 100, unit="2th_deg", thres=3, max_iter=5, error_model="azimuthal")
print(clipped.intensity[:5])
FILTERS["sigma_clip"] = clipped
median = ai.medfilt1d_ng(img, 100, unit="2th_deg", percentile=50)
FILTERS["median"] = median
trimmed = ai.medfilt1d_ng(img, 100, unit="2th_deg", percentile=(10, 90))
FILTERS["trimmed"] = trimmed
sep = ai.separate(img, 100, unit="2th_deg")
bragg = sep.bragg
amorphous = sep.amorphous
print(bragg.max(), amorphous.mean())
FILTERS["separate"] = sep
chi_profile = ai.integrate_radial(img, 36, radial_range=(5, 15), radial_unit="2th_deg")
FILTERS["integrate_radial"] = chi_profile
