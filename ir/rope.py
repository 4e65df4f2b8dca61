"""RoPE scaling terms that both the frontend (attention scales) and the reference executor use."""

from __future__ import annotations

import math


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature term (1 when the context is not stretched)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0
