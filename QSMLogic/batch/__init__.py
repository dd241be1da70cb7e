"""Cohort processing: a BIDS dataset's multi-echo GRE runs through the pipeline and the ROI measures on Dask.

:mod:`.discovery` finds the runs, :mod:`.run` processes one (atomic BIDS-derivative outputs, QC, peak memory),
:mod:`.cohort` spreads them over a Dask cluster (resumable, failures isolated), :mod:`.group` writes the group
table; :mod:`.cli` is the ``susceptibility-mri batch`` command.
"""
