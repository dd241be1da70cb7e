"""Regions of interest on real subjects: atlases, registration, user label maps, refinement and per-region measures.
"""
