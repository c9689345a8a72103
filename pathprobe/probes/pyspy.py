"""py-spy as a subprocess: finding it, checking it may attach, recording a window, parsing output.

One recording is ``py-spy record [--subprocesses] --nonblocking --format raw --rate R
--duration CAP -o FILE --pid PID`` (the server probe runs one per worker process, without
``--subprocesses``, by default; see :mod:`pathprobe.probes.server`), started by one low-priority
thread of its own (:class:`_Spawner`: the event loop that drives the load never forks) and
stopped with SIGINT — on which py-spy writes its file and exits — then SIGKILL if it does not
exit in time. Every recording is reaped, also when the window is abandoned.

``--nonblocking`` keeps py-spy from pausing the server for each sample (its overhead then is the
sampler's own CPU, measured in benchmarks/bench_pyspy_overhead.py). Idle threads are left out
(no ``--idle``): py-spy decides idleness from the thread's OS state, which sees a ``time.sleep``
or a blocking read that no frame name shows, and the raw format has no idle flag to carry it. So
``samples`` counts *active* samples; the ``idle`` category holds only active-looking stacks whose
innermost frame is a wait (:mod:`pathprobe.probes.stages`). ``include_idle=True`` adds ``--idle``.
``--duration`` is a safety cap: if pathprobe dies without stopping it, py-spy still ends by
itself.

The raw format is one line per distinct stack: ``frame;frame;…;frame COUNT``, outermost first;
with ``--subprocesses`` the first frames are ``process PID:"cmdline"`` pseudo-frames.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from pathprobe.probes.base import Unavailable

#: Frames longer than this are cut (hostile or generated names must not bloat the report).
MAX_FRAME_CHARS = 160
STOP_GRACE_S = 5.0
#: py-spy runs at this nice level (or pathprobe's own, if lower in priority). It inherits
#: pathprobe's CPU affinity, so it shares cores with the load generator, whose schedule must not
#: slip while py-spy starts (≈ 20 ms of CPU each, several at once when the sample budget
#: promotes workers). A CI run saw the client gate trip on a healthy service that way.
PY_SPY_NICE = 10
#: How often a stopping recording checks whether py-spy has exited (it is polled, not watched:
#: the spawner's children are plain ``subprocess.Popen`` objects).
EXIT_POLL_S = 0.02
CAP_SYS_PTRACE_BIT = 19


@dataclass(frozen=True)
class RawProfile:
    """A parsed raw recording: stacks (outermost first, pseudo-frames removed) → samples."""

    stacks: Counter[tuple[str, ...]]
    samples: int
    pids: frozenset[int]


def find_py_spy() -> str | None:
    """The py-spy executable: beside the running interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def ptrace_refusal(pid: int) -> Unavailable | None:
    """Why this process may not ptrace ``pid`` (py-spy needs it), or None when it may.

    Checks root / CAP_SYS_PTRACE and the Yama ``ptrace_scope`` (1: only descendants, which py-spy
    is not; 2: admin only; 3: never), and a different owner without the capability.
    """
    how = (
        "run pathprobe as root, or grant CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE; "
        "Kubernetes: securityContext.capabilities.add [SYS_PTRACE]), or set "
        "kernel.yama.ptrace_scope=0"
    )
    has_cap = _has_cap_sys_ptrace()
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return Unavailable("ptrace is disabled on this host (kernel.yama.ptrace_scope=3)", how)
    if scope >= 1 and not has_cap:
        return Unavailable(
            f"ptrace refused: kernel.yama.ptrace_scope={scope} and no CAP_SYS_PTRACE", how
        )
    if not has_cap:
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None  # the process is gone; open() reports that separately
        if owner != os.geteuid():
            return Unavailable(
                f"ptrace refused: PID {pid} belongs to uid {owner}, pathprobe runs as uid "
                f"{os.geteuid()} without CAP_SYS_PTRACE",
                how,
            )
    return None


def _has_cap_sys_ptrace() -> bool:
    # Read the effective set even for root: a container may run root without the capability.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE_BIT & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


async def py_spy_version(exe: str) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    except (OSError, TimeoutError):
        return None
    text = out.decode(errors="replace").strip()
    return text.removeprefix("py-spy ").strip() or None


async def try_dump(exe: str, pid: int, timeout_s: float = 15.0) -> str | None:
    """Attach once (``py-spy dump --nonblocking``); None on success, else py-spy's complaint."""
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, "dump", "--nonblocking", "--pid", str(pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        return f"cannot run py-spy: {exc}"
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        await _reap(proc, kill=True)
        return "py-spy dump timed out"
    if proc.returncode == 0:
        return None
    text = err.decode(errors="replace").strip().splitlines()
    return (text[-1] if text else f"py-spy exited with {proc.returncode}")[:300]


class Recording:
    """One running ``py-spy record`` of one root PID (and its subprocesses)."""

    def __init__(
        self,
        exe: str,
        pid: int,
        out_path: Path,
        rate_hz: int,
        max_duration_s: int,
        include_idle: bool = False,
        subprocesses: bool = True,
    ) -> None:
        self.exe = exe
        self.pid = pid
        self.out_path = out_path
        self.err_path = out_path.with_suffix(".stderr")
        self.rate_hz = rate_hz
        self.max_duration_s = max_duration_s
        self.include_idle = include_idle
        self.subprocesses = subprocesses
        #: Samples in the parsed output (set by :meth:`stop`).
        self.samples = 0
        self._proc: _Child | None = None
        self.error: str | None = None
        #: CPU seconds py-spy itself used, read just before it is stopped (its overhead).
        self.cpu_seconds: float | None = None
        #: Recorded at the sample budget's scout rate (:mod:`pathprobe.probes.sample_budget`).
        self.scout = False
        #: Ended by :meth:`discard`: its samples were not wanted, and not read.
        self.discarded = False
        self._stopped: asyncio.Future[RawProfile] | None = None

    def argv(self) -> list[str]:
        argv = [
            self.exe, "record", "--nonblocking",
            "--format", "raw", "--rate", str(self.rate_hz),
            "--duration", str(self.max_duration_s),
            "-o", str(self.out_path), "--pid", str(self.pid),
        ]  # fmt: skip
        if self.subprocesses:
            argv.insert(2, "--subprocesses")
        if self.include_idle:
            argv.insert(2, "--idle")
        return argv

    async def start(self) -> None:
        self._proc = await _SPAWNER.start(self.argv(), self.err_path)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self) -> RawProfile:
        """SIGINT, wait, SIGKILL if needed; always reaped. Parses what py-spy wrote. Once per
        recording: a later call, also one made while the first runs, gets the same profile."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        # Shielded: a caller that is cancelled leaves the stop to the others (and to kill()).
        return await asyncio.shield(self._stopped)

    async def discard(self) -> None:
        """End the recording unread: SIGKILL and reap at once (py-spy writes nothing then; a
        slow-rate py-spy takes up to seconds to exit on SIGINT, measured). :meth:`stop` then
        gives an empty profile and no error, also when it was already under way."""
        self.discarded = True
        if self._proc is not None and self._proc.returncode is None:
            self._read_cpu(self._proc)
        await self.kill()

    def _read_cpu(self, proc: _Child) -> None:
        """py-spy's own CPU so far (its overhead): read while it still runs, just before it is
        told to end."""
        self.cpu_seconds = _cpu_seconds(proc.pid)

    async def _stop(self) -> RawProfile:
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                self._read_cpu(proc)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_S)
                except TimeoutError:
                    await _reap(proc, kill=True)
            if self.discarded:
                return parse_raw("")
            stderr = _tail(self.err_path)
            if proc.returncode not in (0, -signal.SIGINT) and not self.out_path.exists():
                self.error = stderr or f"py-spy exited with {proc.returncode}"
        try:
            text = await asyncio.to_thread(self.out_path.read_text, "utf-8", "replace")
        except OSError:
            text = ""
            if self.error is None:
                self.error = _tail(self.err_path) or "py-spy wrote no output"
        profile = parse_raw(text)
        self.samples = profile.samples
        if profile.samples and not profile.pids:
            # Without --subprocesses the output names no process: it is the one recorded.
            profile = RawProfile(profile.stacks, profile.samples, frozenset({self.pid}))
        return profile

    def kill_now(self) -> None:
        """SIGKILL without waiting (for cancellation paths; :meth:`kill` reaps it after)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def kill(self) -> None:
        """Abandon the recording (close without stop): kill and reap."""
        if self._proc is not None:
            await _reap(self._proc, kill=True)


class _Child:
    """A py-spy started by :class:`_Spawner`: the few calls of ``asyncio.subprocess.Process``
    that a recording uses, with :meth:`wait` polling ``waitpid`` (no child watcher involved)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, sig: int) -> None:
        self._popen.send_signal(sig)

    def kill(self) -> None:
        self._popen.kill()

    async def wait(self) -> int:
        # Polled: an exit is a state of the kernel's, not an event of this loop (waitpid reaps).
        while (code := self._popen.poll()) is None:  # noqa: ASYNC110
            await asyncio.sleep(EXIT_POLL_S)
        return code


class _Spawner:
    """Starts py-spy from one thread of its own, at :data:`PY_SPY_NICE`.

    Why not ``asyncio.create_subprocess_exec``: it forks in the event loop's thread, which is
    the thread that sends the load. Measured in a diagnosis of the healthy gRPC testbed, each
    start held that thread 6–28 ms (the fork and exec wait on the GIL, which the probes' and
    gRPC's threads hold in turns) and the loop's lag rose from 5 ms to 26 ms at most; the
    budget's mid-window re-recordings then put the client behind its schedule. From this thread
    the loop waits for the GIL at most one switch interval at a time.

    Linux keeps a nice level per thread and a child inherits its creating thread's, so lowering
    this thread's level starts py-spy at it (no window at pathprobe's priority after exec).
    """

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pathprobe-pyspy-start", initializer=self._lower
        )

    @staticmethod
    def _lower() -> None:
        with contextlib.suppress(OSError):  # not permitted: py-spy keeps pathprobe's priority
            tid = threading.get_native_id()
            nice = max(PY_SPY_NICE, os.getpriority(os.PRIO_PROCESS, tid))
            os.setpriority(os.PRIO_PROCESS, tid, nice)

    async def start(self, argv: list[str], err_path: Path) -> _Child:
        """Start ``argv`` with stderr to ``err_path`` (so that a chatty py-spy can never block on
        a full pipe), in a session of its own (a Ctrl-C at the terminal reaches pathprobe, which
        then stops py-spy in order). Raises OSError when it cannot start."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._popen, argv, err_path)

    @staticmethod
    def _popen(argv: list[str], err_path: Path) -> _Child:
        with open(err_path, "wb") as err:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )  # fmt: skip
        return _Child(popen)


_SPAWNER = _Spawner()


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


async def _reap(proc: _Child | asyncio.subprocess.Process, kill: bool) -> None:
    if proc.returncode is None and kill:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_S)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    # py-spy prints progress lines prefixed "py-spy>"; the last one that is not is the error.
    errors = [ln for ln in lines if not ln.startswith("py-spy>")]
    return (errors[-1] if errors else "")[:300]


# py-spy's pseudo-frames for --subprocesses, outermost first: ``process PID:"cmdline";``. The
# command line may itself hold ";" (``sh -c 'a; b'``), so they are cut off before splitting.
_PROCESS_FRAME = re.compile(r'process (\d+):".*?"(?:;|$)')


def shorten_frame(frame: str) -> str:
    """Cut a frame to :data:`MAX_FRAME_CHARS`, keeping its ``(file:line)`` tail readable."""
    if len(frame) <= MAX_FRAME_CHARS:
        return frame
    return frame[: MAX_FRAME_CHARS - 1] + "…"


def parse_raw(text: str) -> RawProfile:
    """Parse py-spy's raw (folded) output; malformed lines are skipped."""
    stacks: Counter[tuple[str, ...]] = Counter()
    pids: set[int] = set()
    total = 0
    for line in text.splitlines():
        stack_text, sep, count_text = line.rpartition(" ")
        if not sep or not count_text.isdigit():
            continue
        count = int(count_text)
        pos = 0
        while match := _PROCESS_FRAME.match(stack_text, pos):
            pids.add(int(match.group(1)))
            pos = match.end()
        frames: list[str] = []
        for frame in stack_text[pos:].split(";"):
            if frame.startswith("thread (") or not frame:
                continue
            frames.append(shorten_frame(frame))
        stacks[tuple(frames)] += count
        total += count
    return RawProfile(stacks=stacks, samples=total, pids=frozenset(pids))


def folded_top(stacks: Mapping[tuple[str, ...], float], limit: int = 2000) -> dict[str, int]:
    """The ``limit`` heaviest stacks as ``"frame;frame;frame" → samples`` (for the flame graph);
    weighted counts are rounded, and a stack that rounds to no sample is left out."""
    heaviest = sorted(stacks.items(), key=lambda item: item[1], reverse=True)[:limit]
    rounded = ((";".join(stack), round(n)) for stack, n in heaviest if stack)
    return {name: n for name, n in rounded if n > 0}
