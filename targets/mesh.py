"""Wafer meshes: rectangular regions of cores, closed-form hop counts, and a networkx graph of regions.

A wafer is `mesh_rows x mesh_cols` cores, each joined to its 4 neighbours. A transfer between
two cores takes the Manhattan distance in hops (dimension-ordered routing), so nothing here
builds a graph of cores: 880k nodes would cost seconds and gigabytes for an answer that is one
subtraction. The graph `build_mesh_topology` returns has one node per region (a rectangle of
cores running one program, replicated on every core) and edges along the pipeline: fabric edges
between regions of a wafer, and wafer-link edges between consecutive wafers.

The cores of a region run a few role streams: the cores at one position class of its reduction
trees (`Roles`), the 2-way tree down its rows and the one along its first row's columns. The
compiler emits one stream per role; the interpreter maps every stream back to its cores with the
same geometry to derive each message's hops.

Regions of a uniform grid are numbered in serpentine order: bands of cells from the north, the
even bands west to east and the odd bands east to west, so consecutive cells always share an
edge and a pipeline hand-off inside a wafer is a single hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ir.errors import ConfigError
from targets.spec import SystemSpec


@dataclass(frozen=True, slots=True)
class Shape:
    """A region's size in cores: `rows` x `cols` (what its costs and code depend on)."""

    rows: int
    cols: int

    @property
    def cores(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of cores on one wafer: its north-west corner and its size."""

    wafer: int
    row: int
    col: int
    rows: int
    cols: int

    @property
    def cores(self) -> int:
        return self.rows * self.cols

    @property
    def shape(self) -> Shape:
        return Shape(self.rows, self.cols)

    def to_dict(self) -> dict:
        return {"wafer": self.wafer, "row": self.row, "col": self.col, "rows": self.rows, "cols": self.cols}


def core_hops(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Hops between cores a and b, given as (row, col), on one wafer: the Manhattan distance."""
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def region_hops(a: Region, b: Region) -> int:
    """Fewest hops from a core of `a` to a core of `b` on the same wafer (1 when they share an edge)."""
    if a.wafer != b.wafer:
        raise ConfigError(f"regions on wafers {a.wafer} and {b.wafer} are not joined by the fabric")
    rows = max(0, b.row - (a.row + a.rows - 1), a.row - (b.row + b.rows - 1))
    cols = max(0, b.col - (a.col + a.cols - 1), a.col - (b.col + b.cols - 1))
    return rows + cols


def shared_edge(a: Region, b: Region) -> int:
    """Cores along the edge two touching regions share (links a hand-off can use in parallel); 0 if apart."""
    if a.wafer != b.wafer or region_hops(a, b) != 1:
        return 0
    if a.row + a.rows == b.row or b.row + b.rows == a.row:
        return max(0, min(a.col + a.cols, b.col + b.cols) - max(a.col, b.col))
    return max(0, min(a.row + a.rows, b.row + b.rows) - max(a.row, b.row))


def tree_halves(n: int) -> list[int]:
    """The hops of each level of the 2-way tree along a line of n cores (`tree_positions`)."""
    halves, live = [], n
    while live > 1:
        halves.append((live + 1) // 2)
        live = halves[-1]
    return halves


def tree_positions(n: int) -> tuple[list[tuple[int, tuple[int, ...]]], list[int]]:
    """A 2-way tree along a line of n cores by recursive halving: at level j the first a_j cores are
    live, and core i in [h_j, a_j), h_j = ceil(a_j / 2), sends to core i - h_j (h_j hops), so the
    hops of all levels add up to about n - 1 (the model's figure). Returns every core's (send level,
    levels it receives at) -- the root's send level is the tree's height -- and every level's h_j."""
    halves = tree_halves(n)
    out = []
    for i in range(n):
        level, live, receives = len(halves), n, []
        for j, h in enumerate(halves):
            if i >= h:
                level = j
                break
            if i + h < live:
                receives.append(j)
            live = h
        out.append((level, tuple(receives)))
    return out, halves


@dataclass(frozen=True, slots=True)
class Roles:
    """The role streams of a region: root-row streams (by column key) first, then row streams."""

    keys: tuple[tuple, ...]  # ("root", level, receive levels) or ("row", level, receive levels)
    replicas: tuple[int, ...]
    first: tuple[int, ...]  # the first row (row roles) or column (root roles) of each
    row_role: tuple[int, ...]  # role index of every row r > 0 (index 0 unused)
    col_role: tuple[int, ...]  # role index of row 0's core in every column
    row_halves: tuple[int, ...]  # hops of each level of the row tree
    col_halves: tuple[int, ...]

    @classmethod
    def of(cls, n_rows: int, n_cols: int) -> Roles:
        (cols, col_halves), (rows, row_halves) = tree_positions(n_cols), tree_positions(n_rows)
        col_keys = sorted(set(cols))
        row_keys = sorted(set(rows[1:]))
        keys = [("root", *k) for k in col_keys] + [("row", *k) for k in row_keys]
        index = {k: i for i, k in enumerate(keys)}
        col_role = tuple(index[("root", *k)] for k in cols)
        row_role = (-1,) + tuple(index[("row", *k)] for k in rows[1:])
        replicas, first = [0] * len(keys), [-1] * len(keys)
        for c, role in enumerate(col_role):
            replicas[role] += 1
            first[role] = c if first[role] < 0 else first[role]
        for r in range(1, n_rows):
            replicas[row_role[r]] += n_cols
            first[row_role[r]] = r if first[row_role[r]] < 0 else first[row_role[r]]
        return cls(tuple(keys), tuple(replicas), tuple(first), row_role, col_role, tuple(row_halves),
                   tuple(col_halves))

    @property
    def root(self) -> list[int]:
        return [i for i, k in enumerate(self.keys) if k[0] == "root"]

    def __len__(self) -> int:
        return len(self.keys)


def band_region(wafer: SystemSpec, bands: int, per_band: int, band: int, pos: int, span: int,
                index: int = 0) -> Region:
    """Cells pos .. pos+span-1, counted in serpentine order, of one band of a `bands x per_band`
    grid, merged into one rectangle on wafer `index`."""
    if not (0 <= band < bands and span >= 1 and pos >= 0 and pos + span <= per_band):
        raise ConfigError(f"{wafer.name}: no cells {pos}..{pos + span - 1} in band {band} of a "
                          f"{bands}x{per_band} grid")
    rows, cols = wafer.mesh_rows // bands, wafer.mesh_cols // per_band
    first = pos if band % 2 == 0 else per_band - pos - span  # odd bands run east to west
    return Region(index, band * rows, first * cols, rows, span * cols)


def grid_cells(wafer: SystemSpec, bands: int, per_band: int) -> tuple[Region, ...]:
    """The cells of one wafer cut into `bands` x `per_band` equal rectangles, in serpentine order.

    Cells are `mesh_rows // bands` x `mesh_cols // per_band` cores; the remainder rows and columns
    stay idle (at most bands - 1 rows and per_band - 1 columns)."""
    if not (1 <= bands <= wafer.mesh_rows and 1 <= per_band <= wafer.mesh_cols):
        raise ConfigError(f"{wafer.name}: cannot cut a {wafer.mesh_rows}x{wafer.mesh_cols} mesh into "
                          f"{bands}x{per_band} cells")
    return tuple(band_region(wafer, bands, per_band, b, p, 1) for b in range(bands) for p in range(per_band))


def build_mesh_topology(wafer: SystemSpec, regions: list[Region]) -> nx.Graph:
    """Regions in pipeline order as a graph: node i is regions[i]; consecutive regions are joined
    by a `fabric` edge (hops, latency, parallel links along the shared edge) on one wafer, or a
    `wafer-link` edge across wafers."""
    graph = nx.Graph(system=wafer.name, topology="mesh")
    for i, r in enumerate(regions):
        graph.add_node(i, **r.to_dict(), cores=r.cores)
    for i in range(1, len(regions)):
        graph.add_edge(i - 1, i, **pipeline_edge(regions[i - 1], regions[i], wafer))
    return graph


def pipeline_edge(a: Region, b: Region, wafer: SystemSpec) -> dict:
    """The edge from region `a` to the next, `b`: over the fabric (its hops, their latency, the shared edge's
    parallel links) on one wafer, or one hop of the wafer link."""
    if a.wafer == b.wafer:
        hops = region_hops(a, b)
        return {"kind": "fabric", "hops": hops, "latency_s": hops * wafer.local_link.latency_s,
                "links": max(1, shared_edge(a, b)), "bw_bytes_per_s": wafer.local_link.bw_bytes_per_s}
    return {"kind": "wafer-link", "hops": 1, "latency_s": wafer.global_link.latency_s, "links": 1,
            "bw_bytes_per_s": wafer.global_link.bw_bytes_per_s}
