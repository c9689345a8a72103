"""Which hop adds failures: the two-proportion comparison of adjacent paths."""

from __future__ import annotations

import pytest

from pathprobe.analysis.failures import hop_failures


def summary(requests: int, errors: int, **codes: int) -> dict:
    statuses = {"200": requests - errors, **{k.lstrip("s"): v for k, v in codes.items()}}
    return {"requests": requests, "errors": errors, "status_codes": statuses}


@pytest.mark.parametrize(
    ("inner_errors", "outer_errors", "significant"),
    [
        (0, 0, False),
        (30, 30, False),  # the same rate on both paths: not the hop's
        (0, 3, False),  # 3 of 600: z ≈ 1.7
        (0, 10, True),  # 10 of 600: z ≈ 3.2
        (20, 60, True),
        (60, 20, False),  # fewer on the outer path
    ],
)
def test_significance(inner_errors: int, outer_errors: int, significant: bool) -> None:
    found = hop_failures("direct", summary(600, inner_errors), "proxy", summary(600, outer_errors))
    assert found is not None
    assert found.significant is significant
    assert found.excess == pytest.approx(max(0, outer_errors - inner_errors))


def test_sentence_quotes_the_statuses_and_the_excess() -> None:
    found = hop_failures("direct", summary(500, 0), "proxy", summary(500, 21, s503=21))
    assert found is not None
    text = found.sentence()
    assert "21 of 500 requests failed on proxy (4.2%; 503 × 21)" in text
    assert "0 of 500 on direct" in text
    assert "adds about 21 failures" in text


def test_no_requests_is_no_comparison() -> None:
    assert hop_failures("direct", summary(0, 0), "proxy", summary(10, 1)) is None
