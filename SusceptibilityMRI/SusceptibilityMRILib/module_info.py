"""What every module of the extension shows in Slicer's module panel besides its own title and help (no Qt): the
category the modules are listed under, the contributors and the acknowledgement. Each module class calls
:func:`describe_module` from its ``__init__``."""
from __future__ import annotations

from typing import Any

#: Category of Slicer's module list under which the extension's modules appear.
CATEGORY = "Susceptibility MRI"
CONTRIBUTORS = ("SusceptibilityMRI contributors",)
ACKNOWLEDGEMENT = "See docs/slicer.md of the SusceptibilityMRI extension."


def describe_module(parent: Any, title: str, help_text: str, acknowledgement_text: str = ACKNOWLEDGEMENT) -> None:
    """Fill a module's panel description (``parent`` of ``ScriptedLoadableModule.__init__``): ``title`` and
    ``help_text``, the shared category and contributors, no module dependencies, and ``acknowledgement_text``."""
    parent.title = title
    parent.categories = [CATEGORY]
    parent.dependencies = []
    parent.contributors = list(CONTRIBUTORS)
    parent.helpText = help_text
    parent.acknowledgementText = acknowledgement_text


__all__ = ["ACKNOWLEDGEMENT", "CATEGORY", "CONTRIBUTORS", "describe_module"]
