"""report.json (payload builder) and report.html (renderer)."""
