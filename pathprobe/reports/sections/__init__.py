"""The report page's sections, one module each, in page order: :mod:`.verdict` (verdict card,
ranking, targets), :mod:`.attribution`, :mod:`.latency`, :mod:`.client` (with the load
generators), :mod:`.network`, :mod:`.server` (:mod:`.profile` and :mod:`.processes`: workers,
deaths, OOM, cgroup) and :mod:`.reproduce`; :mod:`.common` holds what several of them read.

Each section turns the report.json dict into display data for its block of
``templates/report.html.j2`` and reads nothing but that dict (see :mod:`pathprobe.reports.render`).
"""
