"""The server-side agent for remote profiling (``pathprobe agent``); its client is
:mod:`pathprobe.probes.remote`."""
