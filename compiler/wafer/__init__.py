"""Planning on wafer-scale meshes: per-region costs, the layout search, and the wafer Plan."""
