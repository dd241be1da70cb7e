"""Regions of interest on real subjects (deep grey nuclei): atlases, registration, user label maps, refinement and
per-region measures. See docs/roi.md.

* :mod:`.atlas` — the shipped CIT168 (PAQD decoding), PD25 from a user folder, registration templates;
* :mod:`.registration` — SimpleITK rigid → affine → B-spline template registration, label/probability warping,
  label maps on other grids;
* :mod:`.regions` — regions on the subject grid from the atlas or a user label map (:class:`.regions.SubjectRegions`);
* :mod:`.refine` — χ-threshold refinement of the small iron-rich nuclei;
* :mod:`.measures` — statistics per region and hemisphere with the reference on every row, flagged rows;
* :mod:`.report` — CSV, JSON and PNG writers; :mod:`.cli` — ``susceptibility-mri roi`` and ``run --roi``.
"""
