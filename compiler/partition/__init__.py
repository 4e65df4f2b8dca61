"""Partitioning: shard costs per unit, the CP-SAT stage model, an exact DP check, placement."""
