"""The server-side agent for remote profiling (``pathprobe agent``) and its client probe."""
