"""The testbed's paths and every fault knob, measured with independent tools, not with pathprobe.

Measurements: wall-clock timings of plain urllib requests and raw sockets, the servers' CPU time
from /proc (psutil), TCP_INFO of our own sockets, the cgroup's OOM counters, haproxy's stats
socket and nginx's error log. Assertions are physical lower bounds of the injected fault (a CPU
budget cannot take less CPU; a request serialised behind seven others cannot finish before their
sleeps), so they hold on a slow or busy machine; nothing asserts that something is fast.
"""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from PIL import Image

from pathprobe.testbed import Testbed
from pathprobe.testbed.bed import stats_socket_query

pytestmark = [pytest.mark.integration, pytest.mark.root]

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TABULAR_WIDTH = {"fastapi": 30, "aiohttp": 13, "wsgi": 4}
#: Response headers that time something: none may appear on a bare testbed.
TIMING_HEADERS = ("server-timing", "x-upstream-header-time", "x-upstream-connect-time",
                  "x-haproxy-timers", "x-worker-pid")  # fmt: skip


def jpeg(width: int, height: int, quality: int = 90, seed: int = 1) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


SMALL = jpeg(128, 96)


def post(url: str, body: bytes, timeout_s: float = 60.0) -> tuple[int, dict[str, str], float]:
    """(status, headers, wall ms) of one POST; HTTP errors are answers too."""
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"})
    try:
        with OPENER.open(request, timeout=timeout_s) as resp:
            resp.read()
            status, headers = resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, {k.lower(): v for k, v in exc.headers.items()}
    return status, headers, (time.perf_counter() - started) * 1e3


def burst(url: str, body: bytes, n: int) -> list[tuple[int, dict[str, str], float]]:
    """``n`` requests sent at the same instant: connect all first, then write all requests.

    Returns (status, headers, ms from the common send to that response's end) per request.
    Raw sockets, so no thread start-up spreads the arrivals out.
    """
    host_port, _, path = url.split("//", 1)[1].partition("/")
    host, port = host_port.split(":")
    head = (f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    socks = [socket.create_connection((host, int(port)), timeout=30) for _ in range(n)]
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {sock: bytearray() for sock in socks}
    finished_ms: dict[socket.socket, float] = {}
    try:
        started = time.perf_counter()
        for sock in socks:
            sock.sendall(head + body)
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = started + 120
        while len(finished_ms) < n and time.perf_counter() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj  # type: ignore[assignment]
                chunk = sock.recv(65536)
                if chunk:
                    received[sock] += chunk
                else:
                    finished_ms[sock] = (time.perf_counter() - started) * 1e3
                    selector.unregister(sock)
                    # Close at once, as HTTP clients do: gunicorn (27 here) lingers on a closed
                    # connection until the client's FIN (up to 2 s) before it takes the next.
                    sock.close()
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    results = []
    for sock in socks:
        head_text = bytes(received[sock]).split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head_text.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        results.append((status, headers, finished_ms.get(sock, float("inf"))))
    return results


def tree_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    return total


@pytest.fixture
def make_bed(tmp_path: Path) -> Iterator[Any]:
    """Start testbeds inside the test; every one is stopped however the test ends."""
    beds: list[Testbed] = []

    def make(faults: list[str], stack: str = "fastapi", **kw: Any) -> Testbed:
        bed = Testbed(faults=faults, stack=stack, workdir=tmp_path / f"bed{len(beds)}", **kw)
        beds.append(bed)
        return bed.start()

    yield make
    for bed in beds:
        assert bed.stop() == []


@pytest.fixture(scope="module", params=["fastapi", "aiohttp", "wsgi"])
def healthy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Testbed]:
    # wsgi never sends Server-Timing: it is tested bare, hops included.
    bed = Testbed(stack=request.param, workdir=tmp_path_factory.mktemp(f"healthy-{request.param}"),
                  instrumented=request.param != "wsgi")  # fmt: skip
    bed.start()
    try:
        yield bed
    finally:
        assert bed.stop() == []


# --- the healthy request path -------------------------------------------------------------------


def test_every_path_answers_with_its_hop_headers(healthy: Testbed) -> None:
    for name, url in healthy.urls.items():
        status, headers, _ = post(url + "/predict/image", SMALL)
        assert status == 200, name
        assert headers[healthy.replica_header] in ("r1", "r2")
        if not healthy.instrumented:
            assert not set(TIMING_HEADERS) & set(headers), (name, headers)
            continue
        assert re.search(r"^\w+;dur=[\d.]+, \w+;dur=[\d.]+$", headers["server-timing"])
        if name in ("proxy", "lb"):
            assert re.fullmatch(r"[\d.]+", headers["x-upstream-header-time"])
        if name == "lb":
            assert re.fullmatch(r"Tw=\d+ Tc=\d+ Tr=\d+", headers[healthy.lb_timers_header])
    replicas = {
        post(healthy.urls["lb"] + "/predict/image", SMALL)[1]["x-replica"] for _ in range(4)
    }
    assert replicas == {"r1", "r2"}, "haproxy balances over both replicas"
    assert post(healthy.urls["direct"] + "/predict/image", b"not an image")[0] == 400


@pytest.mark.parametrize("stack", ["fastapi", "aiohttp"])
def test_a_bare_testbed_sends_no_timing_header_on_any_path(make_bed: Any, stack: str) -> None:
    bed = make_bed([], stack, instrumented=False)
    for name, url in bed.urls.items():
        for path, body in (("/predict/image", SMALL), ("/healthz", None)):
            if body is None:
                with OPENER.open(url + path, timeout=30) as resp:
                    status, headers = resp.status, {k.lower() for k in resp.headers}
            else:
                status, found, _ = post(url + path, body)
                headers = set(found)
            assert status == 200, (name, path)
            assert bed.replica_header in headers, "the replica header is no timing header: kept"
            assert not set(TIMING_HEADERS) & headers, (name, path, headers)
    assert bed.describe()["lb_timers_header"] is None
    assert post(bed.urls["direct"] + "/predict/image", b"not an image")[0] == 400


def test_tabular_model_answers_json(healthy: Testbed) -> None:
    width = TABULAR_WIDTH[healthy.stack]
    body = json.dumps({"instances": [[1.0] * width, [0.5] * width]}).encode()
    for url in healthy.urls.values():
        request = urllib.request.Request(url + "/predict/tabular", data=body)
        with OPENER.open(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert len(next(iter(answer.values()))) == 2
    assert post(healthy.urls["lb"] + "/predict/tabular", b'{"instances": [[1]]}')[0] == 422


def test_bodies_of_several_megabytes_pass_every_hop(healthy: Testbed) -> None:
    body = jpeg(1800, 1400, quality=97)
    assert len(body) > 3_000_000
    for name, url in healthy.urls.items():
        assert post(url + "/predict/image", body)[0] == 200, name


def test_server_has_its_workers_and_is_pinned(healthy: Testbed) -> None:
    # Several workers behind each master (the single_concurrency test shows the contrast in
    # timing; no upper bound on time is asserted here, as that would depend on machine speed).
    results = burst(healthy.urls["direct"] + "/predict/image", SMALL, 8)
    assert all(r[0] == 200 for r in results)
    for pid in healthy.server_pids:
        assert len(psutil.Process(pid).children()) == healthy.magnitudes["workers"]
    assert healthy.server_cpu is not None
    assert healthy.client_cpu is not None
    for pid in healthy.server_pids:
        # Every thread: the servers boot on all cores and are pinned afterwards, thread by thread.
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for thread in proc.threads():
                assert os.sched_getaffinity(thread.id) == {healthy.server_cpu}, proc
    info = json.loads(json.dumps(healthy.describe()))
    assert info["faults"] == []
    assert info["urls"] == healthy.urls


# --- server faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "stack", "budget_key"),
    [
        ("heavy_preprocessing", "fastapi", "heavy_preprocessing_ms"),
        ("slow_inference", "aiohttp", "slow_inference_ms"),
    ],
)
def test_cpu_faults_cost_their_budget_per_request(
    make_bed: Any, fault: str, stack: str, budget_key: str
) -> None:
    bed = make_bed([fault], stack)
    budget_ms = bed.magnitudes[budget_key]
    url = bed.urls["direct"] + "/predict/image"
    post(url, SMALL)  # warm-up
    n = 6
    cpu_before = tree_cpu_s(bed.server_pids)
    latencies = [post(url, SMALL)[2] for _ in range(n)]
    cpu_per_request_ms = (tree_cpu_s(bed.server_pids) - cpu_before) / n * 1e3
    # Independent of machine speed: the budget is CPU time, and wall time cannot be less.
    assert cpu_per_request_ms >= 0.9 * budget_ms
    assert min(latencies) >= budget_ms + bed.magnitudes["accelerator_ms"]


def test_wsgi_cpu_faults_run_in_pillow_and_sklearn_and_cost_their_budgets(make_bed: Any) -> None:
    """Both CPU faults at once on the thread-per-request stack, each its own budget, and spent
    where the stack says: Pillow filters in preprocessing, sklearn predictions in inference."""
    from pathprobe.testbed import wsgi_server
    from pathprobe.testbed.settings import ServerSettings

    bed = make_bed(["heavy_preprocessing", "slow_inference"], "wsgi", instrumented=False)
    budget_ms = bed.magnitudes["heavy_preprocessing_ms"] + bed.magnitudes["slow_inference_ms"]
    url = bed.urls["direct"] + "/predict/image"
    post(url, SMALL)  # warm-up
    n = 6
    cpu_before = tree_cpu_s(bed.server_pids)
    latencies = [post(url, SMALL)[2] for _ in range(n)]
    cpu_per_request_ms = (tree_cpu_s(bed.server_pids) - cpu_before) / n * 1e3
    assert cpu_per_request_ms >= 0.9 * budget_ms
    assert min(latencies) >= budget_ms + bed.magnitudes["accelerator_ms"]
    # The same stage functions in this process: the budgets go to the libraries real code calls.
    from unittest import mock

    import PIL.ImageOps
    from sklearn.neighbors import KNeighborsClassifier

    settings = ServerSettings(faults=("heavy_preprocessing",),
                              magnitudes={"heavy_preprocessing_ms": 20.0})  # fmt: skip
    with (
        mock.patch.object(PIL.ImageOps, "equalize", wraps=PIL.ImageOps.equalize) as equalize,
        mock.patch.object(KNeighborsClassifier, "predict_proba", autospec=True,
                          side_effect=KNeighborsClassifier.predict_proba) as predict,
    ):  # fmt: skip
        features = wsgi_server.photo_to_features(SMALL, settings)
        wsgi_server.GlyphScorer().score(features, extra_cpu_ms=20.0)
    assert equalize.call_count >= 1
    assert predict.call_count >= 2  # the plain prediction and at least one jittered round


@pytest.mark.parametrize("stack", ["fastapi", "aiohttp", "wsgi"])
def test_oom_kills_a_worker_on_large_images_and_the_server_restarts_it(
    make_bed: Any, stack: str
) -> None:
    bed = make_bed(["oom"], stack)
    url = bed.urls["direct"] + "/predict/image"
    master = psutil.Process(bed.server_pids[0])
    workers_before = {p.pid for p in master.children()}
    cg = bed.cgroups[0]
    assert cg.path.name.startswith("pathprobe-tb-")
    assert cg.oom_kills() == 0
    assert post(url, SMALL)[0] == 200
    # 1000×1000 px × ≥1 KiB/px is ≥ 1 GB against a limit of usage + ~200 MB.
    try:
        big_status: int | None = post(url, jpeg(1000, 1000))[0]
    except (ConnectionError, urllib.error.URLError, http_client_errors()):
        big_status = None  # the worker died mid-request: reset or empty reply
    assert big_status != 200
    assert cg.oom_kills() >= 1
    deadline = time.monotonic() + 30
    workers_after = set()
    while time.monotonic() < deadline:
        workers_after = {p.pid for p in master.children()}
        if len(workers_after) == len(workers_before) and workers_after != workers_before:
            break
        time.sleep(0.2)
    assert workers_after != workers_before, "the killed worker was replaced"
    assert len(workers_after) == len(workers_before)
    assert master.is_running(), "the OOM killer took a worker, not the master"
    for pid in workers_after:
        assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500"
    assert post(url, SMALL)[0] == 200


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


@pytest.mark.parametrize("stack", ["aiohttp", "wsgi"])
def test_single_concurrency_queues_requests_instead_of_rejecting(make_bed: Any, stack: str) -> None:
    bed = make_bed(["single_concurrency"], stack)
    wait_ms = bed.magnitudes["accelerator_ms"]
    worker = psutil.Process(bed.server_pids[0]).children()
    assert len(worker) == 1
    cpu_before = tree_cpu_s(bed.server_pids[:1])
    results = burst(bed.urls["direct"] + "/predict/image", SMALL, 8)
    cpu_s = tree_cpu_s(bed.server_pids[:1]) - cpu_before
    assert [r[0] for r in results] == [200] * 8, "queued, not 503"
    # One at a time: the last of eight waited for seven accelerator waits before its own.
    slowest_ms = max(r[2] for r in results)
    assert slowest_ms >= 8 * wait_ms * 0.95
    if stack == "wsgi":
        # gunicorn's sync worker: one thread, and while it waits (a socket read) the server is
        # idle — the queue is made of waiting, not of CPU.
        assert worker[0].num_threads() == 1
        assert cpu_s * 1e3 < 0.5 * slowest_ms


# --- proxy and load balancer --------------------------------------------------------------------


def test_proxy_queue_delays_requests_above_the_rate(make_bed: Any) -> None:
    bed = make_bed(["proxy_queue"], "fastapi")
    rate = bed.magnitudes["proxy_rate_rps"]
    n = 12
    results = burst(bed.urls["proxy"] + "/predict/image", SMALL, n)
    assert [r[0] for r in results] == [200] * n, "delayed, not rejected"
    # nginx lets one request through every 1/rate s: the last one cannot end before (n-1)/rate.
    assert max(r[2] for r in results) >= 0.95 * (n - 1) / rate * 1e3
    log = (bed.workdir / "nginx-r1.error.log").read_text()
    assert log.count("delaying request") >= n // 2


def test_lb_queue_makes_haproxy_queue(make_bed: Any) -> None:
    bed = make_bed(["lb_queue"], "aiohttp")
    wait_ms = bed.magnitudes["accelerator_ms"]
    results = burst(bed.urls["lb"] + "/predict/image", SMALL, 12)
    assert [r[0] for r in results] == [200] * 12
    tw = [int(re.search(r"Tw=(\d+)", r[1]["x-haproxy-timers"]).group(1)) for r in results]  # type: ignore[union-attr]
    # Two servers × maxconn 1: of 12 simultaneous requests the last waits ≥ 5 service times.
    assert max(tw) >= 4 * wait_ms
    stats = stats_socket_query(bed.workdir / "haproxy.sock")
    header = stats.splitlines()[0].lstrip("# ").split(",")
    rows = [
        dict(zip(header, line.split(","), strict=False)) for line in stats.splitlines()[1:] if line
    ]
    backend = next(r for r in rows if r["pxname"] == "be_replicas" and r["svname"] == "BACKEND")
    assert int(backend["qmax"]) >= 4
    assert all(
        int(r["slim"]) == 1
        for r in rows
        if r["pxname"] == "be_replicas" and r["svname"] in ("r1", "r2")
    )


# --- network faults -----------------------------------------------------------------------------


def connect_ms(url: str) -> float:
    host, port = url.split("//")[1].split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=10):
        return (time.perf_counter() - started) * 1e3


def upload(url: str, size: int) -> tuple[float, int]:
    """POST ``size`` bytes on a raw socket; (seconds until the response starts, our retransmits)."""
    host, port = url.split("//")[1].split(":")
    head = (f"POST /predict/tabular HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        started = time.perf_counter()
        sock.sendall(head + b" " * size)
        first = sock.recv(1)
        elapsed = time.perf_counter() - started
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        assert first == b"H"
    total_retrans = struct.unpack_from("I", info, 100)[0]  # struct tcp_info.tcpi_total_retrans
    return elapsed, total_retrans


def test_net_delay_adds_round_trip_time(make_bed: Any) -> None:
    bed = make_bed(["net_delay"], "fastapi")
    delay_ms = bed.magnitudes["net_delay_ms"]
    assert bed.netns
    assert bed.netns.startswith("pptb-")
    assert bed.urls["direct"].startswith("http://10.213.")
    samples = [connect_ms(bed.urls["direct"]) for _ in range(5)]
    # The SYN and the SYN/ACK are each held delay_ms.
    assert min(samples) >= 2 * delay_ms * 0.95
    status, _, total_ms = post(bed.urls["lb"] + "/predict/image", SMALL)
    assert status == 200
    assert total_ms >= 4 * delay_ms * 0.95


def test_net_loss_causes_retransmissions(make_bed: Any) -> None:
    bed = make_bed(["net_loss"], "aiohttp")
    retransmits = sum(upload(bed.urls["direct"], 1_000_000)[1] for _ in range(2))
    # ~1400 segments at 3 % loss: dozens expected; none would mean no loss at all.
    assert retransmits >= 5


def test_net_bandwidth_limits_transfer_rate(make_bed: Any) -> None:
    bed = make_bed(["net_bandwidth"], "fastapi")
    mbit = bed.magnitudes["net_bandwidth_mbit"]
    size = 600_000
    elapsed_s, _ = upload(bed.urls["direct"], size)
    # The token bucket lets at most its 64 KiB burst through early; the rest goes at the rate.
    assert elapsed_s >= (size - 64 * 1024) * 8 / (mbit * 1e6) * 0.9


# --- the client ---------------------------------------------------------------------------------

# Pinned to the client's core: how much wall time does 20 ms of CPU work take? A load generator
# needs CPU to keep its schedule; this is the stretch it would suffer.
STRETCH_PROBE = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
ratios = []
for _ in range(7):
    wall, cpu = time.monotonic(), time.thread_time()
    while time.thread_time() - cpu < 0.020:
        pass
    ratios.append((time.monotonic() - wall) / (time.thread_time() - cpu))
ratios.sort()
print(ratios[len(ratios) // 2])
"""


def steal_s(cpu: int) -> float:
    """Seconds the hypervisor has taken from vCPU ``cpu`` since boot (/proc/stat's steal)."""
    return float(psutil.cpu_times(percpu=True)[cpu].steal)


def test_starved_client_loses_its_core(make_bed: Any) -> None:
    import subprocess
    import sys

    bed = make_bed(["starved_client"], "aiohttp")
    hog = next(p for p in bed.owned()["processes"] if p["name"] == "hog")
    hog_proc = psutil.Process(hog["pid"])
    assert hog_proc.cpu_affinity() == [bed.client_cpu]
    cpu0 = sum(hog_proc.cpu_times()[:2])
    wall0, steal0 = time.monotonic(), steal_s(bed.client_cpu)
    out = subprocess.run([sys.executable, "-c", STRETCH_PROBE, str(bed.client_cpu)],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    # Share of the time the core was ours: what the hypervisor stole from the vCPU was nobody's.
    delivered_s = time.monotonic() - wall0 - (steal_s(bed.client_cpu) - steal0)
    share = (sum(hog_proc.cpu_times()[:2]) - cpu0) / delivered_s
    stretch = float(out.stdout)
    # The hog wants the core for `duty` of the wall time. Even a scheduler that ignored its weight
    # and shared the core equally with the probe would give it half of that: duty / 2 is the
    # floor (a CI run measured 0.48 at duty 0.9, the equal-sharing case, where the bound used to
    # be 0.6 × duty). 0.8 of it leaves room for cpu_times' 10 ms ticks over a window of ≥ 0.3 s.
    assert share >= 0.8 * bed.magnitudes["starved_client_duty"] / 2
    # The hog's autogroup outweighs ours ~87:1 while it runs, so CPU work on this core takes
    # longer than its CPU time in wall time (about 1 when not starved on a quiet core). How much
    # longer depends on the scheduler: 30× in one run, 2.0× in a CI run where the probe still had
    # wake-up credit (EEVDF lag) against the hog. Even equal sharing while the hog is busy 90 % of
    # the time gives 1 / (0.1 + 0.9 / 2) ≈ 1.8; the bound sits below that, and with the hog's
    # share above, the core was the hog's.
    assert stretch >= 1.5


def test_the_oom_headroom_does_not_count_page_cache(tmp_path: Path) -> None:
    """Files a process of the cgroup wrote stay charged to it as page cache, which the kernel
    reclaims before it OOM-kills: the testbed's limit (anonymous usage + headroom) leaves it out.
    (With a cold cache the servers' library reads made the OOM fault not happen at all.)"""
    import subprocess
    import uuid

    from pathprobe.testbed import cgroup

    cg = cgroup.create(f"cachetest-{uuid.uuid4().hex[:8]}")
    try:
        data = tmp_path / "cached.bin"
        # The shell joins the cgroup, then dd writes 64 MiB through the page cache.
        subprocess.run(
            ["sh", "-c", f'echo $$ > {cg.procs_file} && exec dd if=/dev/zero of={data} '
                         'bs=1M count=64 status=none'],
            check=True, timeout=60,
        )  # fmt: skip
        assert cg.usage_bytes() >= 60 * 2**20
        assert cg.anonymous_bytes() <= cg.usage_bytes() - 60 * 2**20
    finally:
        cgroup.remove(cg.path)
