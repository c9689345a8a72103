"""pathprobe: find where the latency of an ML prediction service goes."""

__version__ = "0.1.0"
