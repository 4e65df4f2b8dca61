"""sramflow's languages: the graph IR and (later) the Program, with text forms."""

from ir.errors import ConfigError, DoesNotFitError, HazardError, ParseError, SramflowError, VerifyError
from ir.graph import Builder, Graph, Op, Value
from ir.ops import OPDEFS, Cost, Opcode
from ir.types import DType, TensorType

__all__ = [
    "OPDEFS", "Builder", "ConfigError", "Cost", "DType", "DoesNotFitError", "Graph", "HazardError",
    "Op", "Opcode", "ParseError", "SramflowError", "TensorType", "Value", "VerifyError",
]
