"""The Jinja side of the HTML pages (report and compare): the environment, with autoescape always
on and the display filters, and the inlined assets."""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
from collections.abc import Callable

import jinja2
from markupsafe import Markup

from pathprobe.reports.fields import clip, fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_rps


def _asset(name: str) -> str:
    return (importlib.resources.files("pathprobe.reports") / "assets" / name).read_text("utf-8")


@functools.cache
def environment() -> jinja2.Environment:
    """The report's Jinja environment: package templates, autoescape always on (whatever the
    template's file name), undefined variables are errors, assets available as ``asset(name)``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pathprobe.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Callable[..., str]] = {
        "ms": fmt_ms,
        "pct": fmt_pct,
        "bytes": fmt_bytes,
        "rps": fmt_rps,
        "clip": clip,
        "n": fmt_num,
    }
    env.filters.update(filters)
    # |tojson: compact, and in the data's own order (sorting 40k flame nodes' keys is wasted work).
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":")}
    # Assets are our own files, inlined verbatim; Markup keeps autoescape from mangling them.
    env.globals["asset"] = lambda name: Markup(_asset(name))
    return env


def flame_scripts() -> list[Markup]:
    """The scripts a page with a flame graph inlines, in load order (d3 first, ours last)."""
    return [
        Markup(_asset(name))
        for name in (
            "vendor/d3/d3.min.js",
            "vendor/d3-flame-graph/d3-flamegraph.umd.min.js",
            "report.js",
        )
    ]


def csp_hash(script: str) -> str:
    """The CSP source hash of an inline script's exact text (``'sha256-…'`` without quotes)."""
    return base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
