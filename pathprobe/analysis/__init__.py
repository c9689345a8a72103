"""Pure functions over arrays: percentiles, step summaries, targets, hop deltas, attribution."""
