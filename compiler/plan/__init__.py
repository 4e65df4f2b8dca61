"""The plan layer: the Plan and its records, its figures, the search shared by every backend, and its report."""

from compiler.plan.records import ChipRange, Memory, Plan, Region, Stage, plan_dict, round_sig

__all__ = ["ChipRange", "Memory", "Plan", "Region", "Stage", "plan_dict", "round_sig"]
