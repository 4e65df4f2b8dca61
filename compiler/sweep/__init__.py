"""Design-space sweeps: a TOML spec of axes, its points run on Ray, a results table, Pareto plots and fronts."""
