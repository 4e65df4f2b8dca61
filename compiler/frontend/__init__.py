"""The frontend: a model config (preset or HF config.json) to the graph IR of one phase."""

from compiler.frontend.build import BLOCKS, PHASES, build_graph
from compiler.frontend.config import FAMILIES, ModelConfig, RopeScaling, load_model_config

__all__ = ["BLOCKS", "FAMILIES", "PHASES", "ModelConfig", "RopeScaling", "build_graph", "load_model_config"]
