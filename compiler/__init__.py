"""The path from a model config to a Program: frontend, passes, partitioner, scheduler, CLI."""
