"""The built-in testbed: a real model server behind nginx and haproxy, with fault knobs.

Public API: :class:`Testbed`, :data:`FAULTS` (fault name → stage it produces), :data:`STACKS`,
:data:`DEFAULT_MAGNITUDES`. See design.md §6.
"""

from pathprobe.testbed.bed import Testbed
from pathprobe.testbed.faults import DEFAULT_MAGNITUDES, FAULTS, STACKS

__all__ = ["DEFAULT_MAGNITUDES", "FAULTS", "STACKS", "Testbed"]
