"""Keeps the garbage collector's full passes out of the load a step sends.

A full collection holds the GIL while it walks every tracked object of the process. In a
diagnosis of the gRPC testbed (numpy, scapy, grpc and the probes loaded) one took 269 ms and
stalled the load generator's event loop for 300 ms, measured; the client gate then blames the
client for a healthy service, because the schedule slipped. So between steps the heap is
collected once and what survives is frozen (``gc.freeze``): collections during the step walk only
what the step itself allocated. The price is that a reference cycle among frozen objects that
turns to garbage later is never freed; what outlives a step is plain data (records, summaries),
which reference counting frees. At the end of the run the frozen objects go back to the collector
(:func:`release`): ``gc.get_referrers`` skips frozen objects, and code that runs later in the same
process may count on it (Hypothesis does, when it is first imported after a diagnosis in a test
run).
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then freeze the survivors. Call between steps, never while one runs (the first
    call of a process takes as long as the stall it prevents)."""
    gc.collect()
    gc.freeze()


def release() -> None:
    """Give what :func:`settle` froze back to the collector: call when the run's steps are over."""
    gc.unfreeze()
