"""`python -m compiler.cli`: the sramflow command line."""

import sys

from compiler.cli import main

sys.exit(main())
