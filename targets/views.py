"""Program-shaped views over chosen rows, for the rules that read `program.cols` and friends.

The interpreter checks blocks and sets of unrolled rows (a universe's messages, the rows beside
a barrier) with the same rule functions it would run on a whole unrolled Program; a view gives
them the columns of just those rows and the Program's chips, metadata and dialect.
"""

from __future__ import annotations

import numpy as np

from ir.program import Program


class RowsView:
    """Columns `cols` (rows sorted by chip) standing in for a Program's unrolled rows."""

    def __init__(self, program: Program, cols: dict[str, np.ndarray]):
        self.cols, self.chips, self.meta, self.dialect = cols, program.chips, program.meta, program.dialect
        self.phase = program.phase

    def chip_slice(self, chip: int) -> slice:
        c = self.cols["chip"]
        return slice(int(np.searchsorted(c, chip, "left")), int(np.searchsorted(c, chip, "right")))


class BodyView(RowsView):
    """A Program's block rows, as the rules about single rows read them."""

    def __init__(self, program: Program):
        super().__init__(program, program.body)
