"""Surgical-targeting geometry on arrays and RAS affines (no Slicer): AC-PC and Leksell frame coordinates,
automatic nucleus targets, vessel segmentation, trajectory safety distances, rigid fusion and export."""
from __future__ import annotations
