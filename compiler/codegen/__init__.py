"""Lowering and static scheduling: per-chip graph ops to cycle-stamped Program instructions."""
