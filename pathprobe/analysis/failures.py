"""Which hop adds failures: the error rates of a path and of the path just inside it, compared.

The same plan (request for request) is sent through every path, so a hop that rejects or breaks
requests shows as an error rate on its path above the inner path's. Errors count as the targets
count them (design.md §5: transport failures and statuses ≥ 400), from the windows' exact tallies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The outer path must fail more often than the inner one by this many standard errors of the
#: difference (two-proportion z-test, pooled): one-sided, a 0.13 % false-alarm chance per hop
#: when both fail equally often, so sampling noise between two windows is not blamed on a hop.
FAILURE_Z = 3.0
#: ...and by at least this many requests: a z-test on one or two events means little.
MIN_EXCESS_FAILURES = 3


@dataclass(frozen=True)
class HopFailures:
    """Errors on a hop's path (``outer``) against the path just inside it (``inner``)."""

    inner: str
    outer: str
    inner_errors: int
    inner_requests: int
    outer_errors: int
    outer_requests: int
    outer_statuses: Mapping[str, int] = field(default_factory=dict)  # error statuses only

    @property
    def excess(self) -> float:
        """Failures on the outer path beyond the inner path's rate (≥ 0)."""
        if not self.outer_requests or not self.inner_requests:
            return 0.0
        inner_rate = self.inner_errors / self.inner_requests
        return max(0.0, self.outer_errors - inner_rate * self.outer_requests)

    @property
    def significant(self) -> bool:
        if self.excess < MIN_EXCESS_FAILURES:  # also: either path sent nothing
            return False
        n_i, n_o = self.inner_requests, self.outer_requests
        p_i, p_o = self.inner_errors / n_i, self.outer_errors / n_o
        pooled = (self.inner_errors + self.outer_errors) / (n_i + n_o)
        se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_i + 1.0 / n_o))
        return se > 0 and (p_o - p_i) / se >= FAILURE_Z

    def sentence(self) -> str:
        statuses = ", ".join(f"{code} × {n}" for code, n in sorted(self.outer_statuses.items()))
        return (
            f"{self.outer_errors} of {self.outer_requests} requests failed on {self.outer} "
            f"({self.outer_errors / self.outer_requests:.1%}"
            + (f"; {statuses}" if statuses else "")
            + f") against {self.inner_errors} of {self.inner_requests} on {self.inner} "
            f"({self.inner_errors / self.inner_requests:.1%}): the hop adds about "
            f"{self.excess:.0f} failures"
        )


def hop_failures(
    inner: str, inner_summary: Mapping[str, Any], outer: str, outer_summary: Mapping[str, Any]
) -> HopFailures | None:
    """The comparison of two step summaries of one step (None when either sent nothing)."""
    n_i, n_o = int(inner_summary.get("requests") or 0), int(outer_summary.get("requests") or 0)
    if not n_i or not n_o:
        return None
    statuses = {
        code: int(n)
        for code, n in (outer_summary.get("status_codes") or {}).items()
        if str(code).isdigit() and int(code) >= 400
    }
    return HopFailures(
        inner=inner,
        outer=outer,
        inner_errors=int(inner_summary.get("errors") or 0),
        inner_requests=n_i,
        outer_errors=int(outer_summary.get("errors") or 0),
        outer_requests=n_o,
        outer_statuses=statuses,
    )
