"""Render Slicer's own slice and 3D views of a targeting plan on the head phantom to one PNG, offscreen.

Uses trame-slicer's SlicerApp and DirectViewFactory (DESIGN.md §4), which need slicer-core 5.11 — so run it in an
environment of its own, not the test environment (slicer-core 5.13)::

    python -m venv /tmp/trame-venv
    /tmp/trame-venv/bin/pip install "trame-slicer[standalone]==2.0.0" "slicer-core>=5.11,<5.12" \\
        numpy scipy numba nibabel SimpleITK matplotlib
    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow PYTHONPATH=. /tmp/trame-venv/bin/python \\
        scripts/targeting_slicer_views.py docs/targeting_slicer_views.png

The plan is made with the module's MRML layer (SusceptibilityMRILib.targeting_nodes): phantom PD-weighted image as
the anatomy, its χ map as the QSM overlay (thresholded, coloured), STN/GPi segmentation (outlines, 3D surfaces),
targets and a proposed trajectory to the right STN; each slice view is centred on that target.
"""
from __future__ import annotations

import os
import sys

import numpy as np


def main(out_path: str) -> None:
    import slicer
    import vtk
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "SusceptibilityMRI"))
    from SusceptibilityMRILib import targeting_nodes as tn

    from QSMLogic.phantom import HEAD_SCALE, make_head_model
    from QSMLogic.targeting.trajectory import entry_from_angles

    app = SlicerApp()
    slicer.mrmlScene = app.scene
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    views = {name: app.view_manager.create_view(definition) for name, definition in (
        ("axial", ViewLayoutDefinition.axial_view()), ("coronal", ViewLayoutDefinition.coronal_view()),
        ("sagittal", ViewLayoutDefinition.sagittal_view()), ("3D", ViewLayoutDefinition.threed_view()))}

    h = make_head_model((128, 128, 80), (1.5, 1.5, 1.5))

    def volume(arr, name, cls="vtkMRMLScalarVolumeNode"):
        node = app.scene.AddNewNodeByClass(cls, name)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(arr.transpose(2, 1, 0)))
        node.SetIJKToRASMatrix(tn._numpy_to_matrix(h.affine))
        node.CreateDefaultDisplayNodes()
        return node

    anatomy = volume((h.proton_density * np.exp(-h.r2star_hz * 0.02)).astype(np.float32), "anatomy (PD-weighted)")
    qsm = volume((h.chi_ppm * h.brain_mask).astype(np.float32), "QSM")   # QSM is zero outside the brain mask
    labels = volume(h.labels.astype(np.int16), "labels", "vtkMRMLLabelMapVolumeNode")
    landmarks = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AC-PC")
    for label, p in (("AC", (0.0, 1.5, -3.5)), ("PC", (0.0, -25.0, -1.5)), ("midline", (0.0, -10.0, 50.0))):
        landmarks.AddControlPoint(vtk.vtkVector3d(*(HEAD_SCALE * np.asarray(p))), label)
    landmarks.CreateDefaultDisplayNodes()
    nuclei = tn.nuclei_of_label_node(labels)
    tn.nuclei_segmentation(app.scene, labels, nuclei)
    targets = tn.targets_from_label_node(app.scene, labels, nuclei, {"STN": "dorsolateral"}, landmarks)
    target = dict(tn.control_points_world(targets))["STN right"]
    acpc = tn.acpc_from_markups(landmarks)
    tn.add_trajectory(app.scene, entry_from_angles(target, acpc.rotation, "right"), target, "STN right trajectory")
    tn.show_overlay(app.scene, anatomy, qsm, opacity=0.6, lower_threshold=0.05)

    images = []
    for name, view in sorted(views.items(), key=lambda kv: kv[0] == "3D"):   # slices first, shown in 3D
        view.update_size(400, 400) if hasattr(view, "update_size") else None
        view.render_window().SetSize(400, 400)
        if name != "3D":
            view.set_background_volume_id(anatomy.GetID())
            view.set_foreground_volume_id(qsm.GetID())
            view.set_foreground_opacity(0.6)
            view.fit_view_to_content()
            slice_node = view.get_view_node()
            slice_node.SetFieldOfView(90.0, 90.0, slice_node.GetFieldOfView()[2])
            slice_node.JumpSliceByCentering(*target)     # the slice through the target, centred on it
            view.set_visible_in_3d(True)
        else:
            view.reset_view()
        view.render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(view.render_window())
        grab.Update()
        arr = vtk.util.numpy_support.vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
        w, hgt, _ = grab.GetOutput().GetDimensions()
        images.append((name, arr.reshape(hgt, w, -1)[::-1]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4.3), dpi=100)
    for ax, (name, img) in zip(axes, images):
        ax.imshow(img)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle("Slicer views (trame-slicer, offscreen): right STN target, QSM overlay, nuclei, trajectory")
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    import vtk.util.numpy_support  # noqa: F401  (vtk_to_numpy)

    main(sys.argv[1] if len(sys.argv) > 1 else "targeting_slicer_views.png")
