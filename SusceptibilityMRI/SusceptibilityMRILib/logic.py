"""Module-logic methods the extension's modules share (no Qt): the first-use dependency install
(:class:`DependenciesLogicMixin`, every module) and what the GUI shows about the selected echo volumes
(:class:`EchoInputsLogicMixin`, the modules reading echoes). Module logic classes list one of them before
``ScriptedLoadableModuleLogic`` and set :attr:`~DependenciesLogicMixin.requester`, the name the install prompt
shows."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from . import dependencies, mrml_adapter


class DependenciesLogicMixin:
    """The extension's Python packages: which are missing, and their install with the user's consent."""

    #: Who asks for the packages in Slicer's install prompt.
    requester = "SusceptibilityMRI"

    def missingDependencies(self) -> List[str]:
        """Requirements of SusceptibilityMRILib/requirements.txt not installed in Slicer's Python."""
        return dependencies.missing_requirements()

    def ensureDependencies(self, confirm: Optional[Callable[[str], bool]] = None) -> bool:
        """Install the missing packages; True when everything is available, False when the user declined.

        Nothing is installed without consent: ``confirm(message)`` decides when given (the self-tests pass one);
        by default the user is asked — by ``slicer.packaging.pip_ensure`` on Slicer >= 5.12, else by
        ``slicer.util.confirmOkCancelDisplay`` before ``slicer.util.pip_install`` (the only dialog the logic can
        open, and only when packages are missing and the caller passed no callback).
        """
        return dependencies.ensure_requirements(confirm=confirm, requester=self.requester)


class EchoInputsLogicMixin(DependenciesLogicMixin):
    """Echo inputs as the GUI shows them (order, phase scaling), with the dependencies; for the console as for the
    widgets."""

    def sortEchoNodes(self, nodes: Sequence[Any]) -> List[Any]:
        """Echo volumes ordered by echo time when the data give one for every volume (else as given)."""
        return mrml_adapter.sort_echo_nodes(list(nodes))

    def describeInputs(self, magnitudeNodes: Any, phaseNodes: Any) -> str:
        """The phase scaling the "auto" rule would choose (or why it cannot) and DICOM ImageType warnings, for the
        GUI; says so instead of failing when the Python packages are not installed yet."""
        return mrml_adapter.describe_inputs(magnitudeNodes, phaseNodes)


__all__ = ["DependenciesLogicMixin", "EchoInputsLogicMixin"]
