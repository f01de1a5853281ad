"""NF-HEDM (near-field high-energy diffraction microscopy), compatible with MIDAS files.

Modules: ``params`` (MIDAS parameter files, YAML), ``crystal`` (B matrix, gemmi space groups,
Laue symmetry, orientations, misorientation), ``reflections`` (hkls.csv), ``grid`` (hexagonal
triangle grid, grid.txt, masks), ``spots`` (spot prediction and footprints), ``simulate``
(binary and intensity images), ``microstructure`` (Voronoi polycrystals), ``images`` (raw
frames to the lit-pixel stack), ``spotsinfo`` (SpotsInfo.bin), ``overlap`` (the overlap
confidence), ``orientations`` (seed files, fundamental-zone grids), ``fit`` (orientation
fitting), ``grains`` (grain clustering, Grains.csv), ``mic`` (.mic files), ``maps`` (NeXus map,
IPF colours and pictures), ``pipeline`` (the multi-resolution run with resume behind
``xreduce-nf``). See ``doc/nf.md`` and ``doc/nf_fit.md``.
"""
