"""`python -m compiler.cli`: the sramflow command line."""

from compiler.cli import entry

entry()
