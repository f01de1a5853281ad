"""NF-HEDM (near-field high-energy diffraction microscopy), compatible with MIDAS files.

Modules: ``params`` (MIDAS parameter files, YAML), ``crystal`` (B matrix, gemmi space groups,
Laue symmetry, orientations, misorientation), ``reflections`` (hkls.csv), ``grid`` (hexagonal
triangle grid, grid.txt, masks), ``spots`` (spot prediction and footprints), ``simulate``
(binary and intensity images), ``microstructure`` (Voronoi polycrystals), ``mic`` (.mic files).
See ``doc/nf.md``.
"""
