"""Which parameter node a module widget shows, and its connection to the GUI (no Qt: tested on slicer-core).

``parameterNodeWrapper.connectGui`` returns the tag that ``disconnectGui`` needs only from Slicer 5.10; on 5.6
and 5.8 it returns ``None``, so a connection cannot be undone there. Connecting again on every module entry (as
the ExtensionWizard template does with the tag) then stacks connectors on the same widgets: each new one refills
the combo boxes, and the stale ones write the first choice back, so a chosen phase scaling turns into "auto".
:class:`ParameterNodeBinding` connects once per MRML node and keeps that connection (and the wrapper that holds
it) while the widget shows the same node, across leaving and re-entering the module, on every version.
"""
from __future__ import annotations

from typing import Any, Optional


class ParameterNodeBinding:
    """The parameter-node wrapper a widget shows, connected to ``gui`` (the widget's ``ui``) at most once."""

    def __init__(self, gui: Any) -> None:
        self.gui = gui
        self.wrapper: Optional[Any] = None
        self.tag: Optional[Any] = None

    def bind(self, wrapper: Optional[Any]) -> bool:
        """Show ``wrapper`` (``None``: nothing). Returns True when it was connected now; False when the binding
        already shows the same MRML node (then the wrapper it holds stays, with its connection)."""
        if wrapper is not None and self.wrapper is not None and wrapper.parameterNode is self.wrapper.parameterNode:
            return False
        self.release()
        if wrapper is None:
            return False
        self.tag = wrapper.connectGui(self.gui)
        self.wrapper = wrapper
        return True

    def release(self) -> None:
        """Disconnect the GUI where Slicer allows it (a tag from 5.10 on) and forget the wrapper."""
        if self.wrapper is not None and self.tag is not None:
            self.wrapper.disconnectGui(self.tag)
        self.wrapper = self.tag = None


__all__ = ["ParameterNodeBinding"]
