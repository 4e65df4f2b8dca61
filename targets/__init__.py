"""The machines: hardware parameters as data, topologies, timing rules, the interpreter."""
