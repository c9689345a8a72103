"""How py-spy's samples are shared among the server's processes, and how mixed rates are counted.

py-spy's cost grows with samples, not with the server's load (≈ 0.33 ms of CPU per sample,
benchmarks/bench_pyspy_overhead.py), so a window spends a fixed budget of samples per second
across the processes it profiles. Spread evenly, most of it goes to processes that never run a
request: a gunicorn master, the replica a path does not reach, a worker left idle at a low rate.
So the budget follows the work:

1. Every process starts at :data:`SCOUT_RATE_HZ`, enough to keep a trickle of evidence from it.
2. Every :data:`REPLAN_S` the server probe reads each process's CPU since the window began, or
   since its birth (:meth:`pathprobe.probes.processes.ProcessSampler.cpu_by_pid`). A process
   that has done work (:func:`is_busy`) joins the *busy* set, for the rest of the window.
3. The busy processes share what the scouts leave of the budget equally (:func:`plan`), and a
   busy process whose rate is off by :data:`RESTART_RATIO` is recorded afresh at the new rate.
   Equal rates among busy processes keep their samples comparable, whatever work each does (a
   rate in proportion to CPU would over-count the busiest process's stages). Because restarts
   wait for a 1.5× change, busy rates may differ by less than that, and the samples per second
   may exceed the budget by as much while the busy set grows; the weights below absorb the first.

Counting (:func:`combine`): a sample stands for 1/rate seconds of a process's time, so a segment
recorded at rate r is weighted 1/r. Once any process was promoted, scout segments are left out:

* a promoted process's scout segment covers its first second or so, which its busy segment
  continues at a higher rate (a stationary load has the same mix of work in both);
* a process that stayed a scout used under 1 % of a core (:func:`is_busy`) at every replan: a
  negligible part of the server's CPU, except for work it began after the last one (under
  :data:`REPLAN_S` of it), which is left out like a promoted process's first second.

Either way one scout sample would weigh as much as 5–50 busy ones: kept, a single stray sample
(a master's housekeeping) cut 47 busy samples to an effective 4 in a test run. What remains is
scaled to Kish's effective sample size n_eff = (Σw)² / Σw², so that a confidence interval
computed on the counts is honest about unequal weights (busy segments at two rates, when the busy
set grew); with one rate it is the plain count. With no process promoted, the scouts are all
there is, at one rate, and count plainly. (Scouts that would be left out are not even read: the
server probe stops the busy recordings first and, when they have samples, kills the scouts, whose
py-spy would take 0.5–3 s at 2 Hz to exit on SIGINT; ``dropped`` counts the scout samples read.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Samples per second per process when the rate is given explicitly.
DEFAULT_RATE_HZ = 10
#: Without an explicit rate, the server probe spends this many samples per second across all the
#: processes of a window. benchmarks/bench_pyspy_overhead.py on this machine kind measured
#: ≈ 0.001 cores per Hz for 3 processes, i.e. ≈ 0.33 ms of CPU per sample; 100 samples/s is
#: then ≈ 3 % of one core, the overhead budget. A mostly idle server is sampled fast enough that
#: its few busy moments show (1 request/s of 150 ms over 8 s: ~120 samples at 100 Hz instead of
#: 12 at 10 Hz).
SAMPLE_BUDGET_HZ = 100
#: A busy process is never sampled slower than this, however many share the budget (above it, a
#: many-worker server costs more than the budget): a 20 ms request still gets a sample in five.
MIN_RATE_HZ = 10
#: py-spy is not accurate much above 100 Hz.
MAX_RATE_HZ = 100
#: Every process starts here, and one that never works stays here: 2 samples/s cost ≈ 0.07 % of
#: a core per process, and whether it works is read from its CPU time, not from its samples.
SCOUT_RATE_HZ = 2
#: How often the busy set is re-read. The first promotion comes one period into the window (the
#: default warm-up is 1 s), and the sampler's CPU reading it relies on ticks at 5 Hz.
REPLAN_S = 1.0
#: A busy process is recorded afresh only when its rate is off by this factor: a new worker in
#: the busy set (rates 25 → 20 Hz) does not restart the others; a restart costs py-spy's start
#: (≈ 50 ms of CPU) and the samples of the old segment's last moments.
RESTART_RATIO = 1.5
#: Pause between two re-recordings of one replan, so that py-spy's starts do not come as one burst
#: of CPU (≈ 20 ms each) on the cores the load generator uses.
RESTART_STAGGER_S = 0.025
#: CPU since the window began that makes a process busy: two of the kernel's 10 ms ticks
#: (USER_HZ = 100; one tick can be a timer's housekeeping) and at least 1 % of the elapsed time
#: (a gunicorn master's heartbeat adds a tick now and then over a long window, never 1 %).
BUSY_CPU_TICKS_S = 0.02
BUSY_CPU_FRACTION = 0.01


def rate_for(processes: int, budget_hz: int = SAMPLE_BUDGET_HZ) -> int:
    """Samples per second per process so that ``processes`` busy recordings share ``budget_hz``."""
    per_process = budget_hz // max(processes, 1)
    return max(MIN_RATE_HZ, min(MAX_RATE_HZ, per_process))


def is_busy(cpu_s: float, elapsed_s: float) -> bool:
    """Whether a process that used ``cpu_s`` of CPU in the window's first ``elapsed_s`` works."""
    return cpu_s >= max(BUSY_CPU_TICKS_S, BUSY_CPU_FRACTION * elapsed_s)


def plan(processes: int, busy: int, budget_hz: int = SAMPLE_BUDGET_HZ) -> int:
    """The rate of each busy process when ``busy`` of ``processes`` work: what the idle ones, at
    :data:`SCOUT_RATE_HZ`, leave of the budget, shared equally (within the per-process bounds)."""
    idle = max(processes - busy, 0)
    return rate_for(busy, max(budget_hz - idle * SCOUT_RATE_HZ, 0))


def needs_restart(current_hz: int, planned_hz: int) -> bool:
    """Whether a recording at ``current_hz`` should be restarted at ``planned_hz``."""
    low, high = sorted((current_hz, planned_hz))
    return high >= RESTART_RATIO * max(low, 1)


@dataclass(frozen=True)
class Segment:
    """One recording of one process: its rate, its stacks, and whether it was a scout's."""

    rate_hz: int
    stacks: Mapping[tuple[str, ...], int]
    scout: bool = False


@dataclass(frozen=True)
class Combined:
    """Stacks over a window's segments, in effective samples (see the module docstring)."""

    stacks: dict[tuple[str, ...], float]  # weighted, scaled so they sum to ``effective``
    effective: float  # Kish's n_eff over the counted samples
    raw: int  # samples in the counted segments
    dropped: int  # samples of scout segments read and left out


def scouts_left_out(busy_samples: Iterable[int]) -> bool:
    """Whether the scouts' samples are left out, given each busy recording's sample count: once
    any busy recording has samples. (A busy recording that got nothing, because py-spy could not
    attach, must not throw the scouts away.)"""
    return any(n > 0 for n in busy_samples)


def combine(segments: Iterable[Segment]) -> Combined:
    """Weight each counted segment's samples by 1/rate and scale them to n_eff."""
    segments = list(segments)
    any_busy = scouts_left_out(sum(seg.stacks.values()) for seg in segments if not seg.scout)
    weighted: dict[tuple[str, ...], float] = {}
    sum_w = sum_w2 = 0.0
    raw = dropped = 0
    for seg in segments:
        n = sum(seg.stacks.values())
        if seg.scout and any_busy:
            dropped += n
            continue
        w = 1.0 / max(seg.rate_hz, 1)
        raw += n
        sum_w += w * n
        sum_w2 += w * w * n
        for stack, count in seg.stacks.items():
            weighted[stack] = weighted.get(stack, 0.0) + w * count
    if sum_w <= 0:
        return Combined({}, 0.0, raw, dropped)
    effective = sum_w * sum_w / sum_w2
    scale = effective / sum_w
    stacks = {stack: value * scale for stack, value in weighted.items()}
    return Combined(stacks, effective, raw, dropped)
