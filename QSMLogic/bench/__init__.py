"""Benchmark harness: ``susceptibility-mri bench`` simulates the phantom at realistic size and times each stage.

Each area module here (``QSMLogic.bench.<area>``) exposes ``run(ctx: BenchContext) -> list[BenchRow]``;
:mod:`QSMLogic.bench.common` has the timer and peak-memory sampler they share.
"""
