"""The load engine: schedules, payloads, HTTP, per-request timings."""
