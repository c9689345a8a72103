"""Errors that carry the process exit code; only the CLI turns them into ``sys.exit``."""

from __future__ import annotations

EXIT_TARGETS_MET = 0
EXIT_TARGETS_MISSED = 1
EXIT_USAGE = 2
EXIT_CANNOT_RUN = 3
EXIT_INTERRUPTED = 130


class PathprobeError(Exception):
    """A failure with a one-line message meant for the user and the exit code to leave with."""

    exit_code = EXIT_CANNOT_RUN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(PathprobeError):
    """Bad flags, config or files: exit 2, checked before any load is sent."""

    exit_code = EXIT_USAGE


class CannotRunError(PathprobeError):
    """The diagnosis could not run at all (no path reachable, testbed failed): exit 3."""

    exit_code = EXIT_CANNOT_RUN
