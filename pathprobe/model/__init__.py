"""The shared model layer: the vocabulary and data every other layer points into.

Nothing here imports another pathprobe package: config, load, probes, analysis and reports all
import from it, never the other way round.
"""
