"""Property: build_config of any raw mapping returns a DiagnoseConfig or raises UsageError.

Nothing else may escape (no TypeError, OverflowError, ValueError from int() of a huge string…):
the CLI turns only PathprobeError into a clean one-line exit 2.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathprobe.config import STAGES, DiagnoseConfig, build_config
from pathprobe.errors import UsageError
from pathprobe.options import KNOWN_KEYS

# TOML can hold: strings, integers (64-bit in TOML; arbitrary here), floats incl. nan/inf,
# booleans, arrays and tables. None stands for "flag not given".
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from([10**400, -(10**400), 2**63, 1e308, -0.0, 5e-324]),
    st.sampled_from(["nan", "inf", "-1", "0", "1e12", "10,20", "image:900-10", "image:8-16",
                     "image:" + "9" * 5000 + "-1", "1_000", " 5 ", "０"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
urls = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda scheme, host, port, tail: f"{scheme}://{host}{port}{tail}",
        st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
        st.sampled_from(["127.0.0.1", "[::1]", "[::1", "", "a b", "user:pw@h", "h\x00"]),
        st.sampled_from(["", ":0", ":80", ":99999", ":-1", ":x"]),
        st.text(max_size=10),
    ),
)
paths = st.one_of(
    # Mostly a valid path, so that the generator reaches the checks after it.
    st.just({"direct": "http://127.0.0.1:9/"}),
    st.just(["lb=https://127.0.0.1:9/x?token=1"]),
    values,
    st.dictionaries(st.sampled_from(["direct", "proxy", "lb", "edge", ""]), urls, max_size=3),
    st.lists(st.builds(lambda n, u: f"{n}={u}", st.sampled_from(["direct", "lb", "x"]), urls)),
)
files = st.sampled_from(
    ["/etc/hostname", "/tmp", "/nonexistent", "/proc/self/mem", "/etc/passwd", "", "\x00"]
)
numbers = st.one_of(
    st.sampled_from([10**400, -(10**400), 2**63, 1e308, -0.0, 5e-324, "1e400", "1" * 5000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.from_regex(r"\A-?[0-9]{0,30}(\.[0-9]{0,5})?(e-?[0-9]{1,4})?\Z"),
)
NUMERIC_KEYS = (
    "rate", "concurrency", "duration", "warmup", "seed", "connections", "workers", "timeout",
    "connect_timeout", "target_p99", "target_rps", "target_error_rate", "abort_on_error_rate",
)  # fmt: skip
# Values shaped like each key's, so the generator reaches past the first check.
key_values: dict[str, st.SearchStrategy[Any]] = {
    **{key: st.one_of(numbers, values) for key in NUMERIC_KEYS},
    "path": paths,
    "out": st.one_of(st.just("/tmp/pathprobe-hypothesis-out"), values),
    "rates": st.one_of(values, st.lists(st.floats(), max_size=5)),
    "body_file": st.one_of(values, files),
    "cacert": st.one_of(values, files),
    "cert": st.one_of(values, files),
    "key": st.one_of(values, files),
    "payload_dir": st.one_of(values, files),
    "server_pid": st.one_of(values, st.lists(st.integers(min_value=-2, max_value=2**22))),
    "stage_rules": st.one_of(
        values, st.dictionaries(st.text(max_size=6), st.sampled_from([*STAGES, "gpu"]))
    ),
    "header": st.one_of(values, st.lists(st.text(max_size=20), max_size=3)),
}

_ALL_KEYS = sorted(KNOWN_KEYS)
# A valid base with one to four keys replaced by random values: each example reaches far into the
# validation instead of failing at the first of 45 random keys.
mutated_configs = st.tuples(
    st.fixed_dictionaries({"path": key_values["path"], "out": key_values["out"]}),
    st.lists(st.sampled_from(_ALL_KEYS), min_size=1, max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: key_values.get(k, values) for k in keys})
    ),
).map(lambda pair: {**pair[0], **pair[1]})
# Everything at once, and unknown keys beside known ones.
raw_configs = st.fixed_dictionaries(
    {}, optional={key: key_values.get(key, values) for key in _ALL_KEYS}
)
with_unknown_keys = st.tuples(
    mutated_configs, st.dictionaries(st.text(max_size=10), values, min_size=1, max_size=2)
).map(lambda pair: {**pair[1], **pair[0]})


# Derandomized (team rule: deterministic tests) and no example database written into the tree.
@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.one_of(mutated_configs, raw_configs, with_unknown_keys))
def test_build_config_returns_config_or_usage_error(raw: dict[str, Any]) -> None:
    try:
        config = build_config(raw)
    except UsageError as exc:
        message = exc.message
        config = None
    if config is None:
        assert message
        assert "\n" not in message
        return
    assert isinstance(config, DiagnoseConfig)
    # What it accepted is sane: a bounded, positive, finite load.
    for rate in config.load.rates or ():
        assert math.isfinite(rate)
        assert rate > 0
    assert math.isfinite(config.load.duration_s)
    assert config.load.duration_s > 0
    assert config.paths
    assert all(p.url.startswith(("http://", "https://")) for p in config.paths)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=6))
def test_arbitrary_mappings_never_crash(raw: dict[str, Any]) -> None:
    try:
        build_config(raw)
    except UsageError:
        pass
