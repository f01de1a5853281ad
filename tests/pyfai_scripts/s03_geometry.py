# Geometry: arrays, Fit2D parameters and configuration, as in pyFAI's geometry tutorial.
import numpy
import pyFAI
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

ARRAYS = {}
ai = AzimuthalIntegrator(dist=0.2, poni1=0.03, poni2=0.035, rot1=0.05, rot2=0.02, rot3=0.01,
                         detector="Pilatus100k", wavelength=1.2e-10)
print(ai.energy, ai.detector.max_shape)
ARRAYS["2th_deg"] = ai.center_array(unit="2th_deg")
ARRAYS["q_nm"] = ai.array_from_unit(typ="center", unit="q_nm^-1")
ARRAYS["chi"] = ai.center_array(unit="chi_rad", scale=False)
ARRAYS["r_mm"] = ai.center_array(unit="r_mm")
ARRAYS["corner_2th"] = ai.corner_array(unit="2th_deg")[..., 0]
ARRAYS["delta_2th"] = ai.array_from_unit(typ="delta", unit="2th_deg")
ARRAYS["solid_angle"] = ai.solidAngleArray()
ARRAYS["polarization"] = ai.polarization(factor=0.99)
fit2d = ai.getFit2D()
print(fit2d["directDist"], fit2d["centerX"], fit2d["centerY"], fit2d["tilt"], fit2d["tiltPlanRotation"])
ARRAYS["fit2d"] = numpy.array([fit2d[k] for k in ("directDist", "centerX", "centerY", "tilt", "tiltPlanRotation")])
ai2 = AzimuthalIntegrator(detector="Pilatus100k", wavelength=1.2e-10)
ai2.setFit2D(fit2d["directDist"], fit2d["centerX"], fit2d["centerY"], fit2d["tilt"], fit2d["tiltPlanRotation"])
ARRAYS["from_fit2d"] = numpy.array([ai2.dist, ai2.poni1, ai2.poni2])
config = ai.get_config()
print(config["detector"], config["dist"], config["detector_config"])
ai3 = AzimuthalIntegrator()
ai3.set_config(config)
ARRAYS["set_config"] = numpy.array([ai3.dist, ai3.poni1, ai3.rot1, ai3.rot2, ai3.rot3])
ai3.dist = 0.25
ai3.wavelength = 1.0e-10
ARRAYS["after_setters"] = ai3.center_array(unit="q_nm^-1")
ai4 = pyFAI.load(config)
ARRAYS["load_config"] = ai4.center_array(unit="2th_deg")
