"""Parsing py-spy's raw output, folding for the flame graph, and the ptrace checks."""

from __future__ import annotations

from collections import Counter

from pathprobe.probes import pyspy

RAW = (
    'process 100:"gunicorn: master [app:app]";process 101:"gunicorn: worker [app:app]";'
    "run (gunicorn/workers/sync.py:125);preprocess (app.py:10);resize (PIL/Image.py:2200) 40\n"
    'process 100:"gunicorn: master [app:app]";process 102:"gunicorn: worker [app:app]";'
    "run (gunicorn/workers/sync.py:125);preprocess (app.py:10);resize (PIL/Image.py:2200) 2\n"
    'process 100:"gunicorn: master [app:app]";process 101:"gunicorn: worker [app:app]";'
    "run (gunicorn/workers/sync.py:125);predict (app.py:20) 10\n"
    "thread (0x7F01);main (x.py:1) 3\n"
    "this line is garbage\n"
    "frame (a.py:1) notanumber\n"
    "\n"
)


def test_parse_raw_merges_workers_and_drops_pseudo_frames() -> None:
    profile = pyspy.parse_raw(RAW)
    assert profile.samples == 55
    assert profile.pids == frozenset({100, 101, 102})
    key = ("run (gunicorn/workers/sync.py:125)", "preprocess (app.py:10)",
           "resize (PIL/Image.py:2200)")  # fmt: skip
    assert profile.stacks[key] == 42  # the same stack in two workers is one stack
    assert profile.stacks[("main (x.py:1)",)] == 3


def test_command_lines_with_semicolons() -> None:
    raw = (
        'process 7:"sh -c run; other";process 8:"python app.py";main (app.py:3);work (app.py:9) 5\n'
        'process 7:"sh -c run; other" 2\n'
    )
    profile = pyspy.parse_raw(raw)
    assert profile.pids == frozenset({7, 8})
    assert profile.stacks[("main (app.py:3)", "work (app.py:9)")] == 5
    assert profile.stacks[()] == 2
    assert profile.samples == 7


def test_empty_and_long_frames() -> None:
    assert pyspy.parse_raw("").samples == 0
    long_name = "f" * 500 + " (a.py:1)"
    profile = pyspy.parse_raw(f"{long_name} 1\n")
    (frame,) = next(iter(profile.stacks))
    assert len(frame) == pyspy.MAX_FRAME_CHARS
    assert frame.endswith("…")


def test_folded_top_limits_and_orders() -> None:
    stacks: Counter[tuple[str, ...]] = Counter({("a", "b"): 5, ("a",): 9, ("c",): 1, (): 4})
    assert pyspy.folded_top(stacks, limit=2) == {"a": 9, "a;b": 5}
    assert list(pyspy.folded_top(stacks)) == ["a", "a;b", "c"]  # the empty stack is dropped


def test_recording_argv() -> None:
    rec = pyspy.Recording("/bin/py-spy", 42, pyspy.Path("/tmp/x.txt"), 50, 120)
    argv = rec.argv()
    assert argv[:4] == ["/bin/py-spy", "record", "--subprocesses", "--nonblocking"]
    assert "--idle" not in argv
    assert argv[argv.index("--rate") + 1] == "50"
    assert argv[argv.index("--duration") + 1] == "120"
    assert argv[argv.index("--pid") + 1] == "42"
    assert argv[argv.index("--format") + 1] == "raw"
    idle = pyspy.Recording("/bin/py-spy", 42, pyspy.Path("/tmp/x.txt"), 50, 120, include_idle=True)
    assert "--idle" in idle.argv()


def test_ptrace_refusal_as_root_of_own_process() -> None:
    import os

    # This process may always inspect itself (same uid); as root with CAP_SYS_PTRACE, anything.
    assert pyspy.ptrace_refusal(os.getpid()) is None


def test_sample_budget_is_shared_by_the_profiled_processes() -> None:
    from pathprobe.probes.sample_budget import MAX_RATE_HZ, MIN_RATE_HZ, SAMPLE_BUDGET_HZ, rate_for

    assert rate_for(1) == MAX_RATE_HZ  # one idle worker: sampled as fast as py-spy is accurate
    assert rate_for(4) * 4 <= SAMPLE_BUDGET_HZ
    assert rate_for(64) == MIN_RATE_HZ  # many workers: each still gets a meaningful profile
