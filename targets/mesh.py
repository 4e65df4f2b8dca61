"""Wafer meshes: rectangular regions of cores, closed-form hop counts, and a networkx graph of regions.

A wafer is `mesh_rows x mesh_cols` cores, each joined to its 4 neighbours. A transfer between
two cores takes the Manhattan distance in hops (dimension-ordered routing), so nothing here
builds a graph of cores: 880k nodes would cost seconds and gigabytes for an answer that is one
subtraction. The graph `build_mesh_topology` returns has one node per region (a rectangle of
cores running one program, replicated on every core) and edges along the pipeline: fabric edges
between regions of a wafer, and wafer-link edges between consecutive wafers.

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
        a, b = regions[i - 1], regions[i]
        if a.wafer == b.wafer:
            hops = region_hops(a, b)
            graph.add_edge(i - 1, i, kind="fabric", hops=hops, latency_s=hops * wafer.local_link.latency_s,
                           links=max(1, shared_edge(a, b)), bw_bytes_per_s=wafer.local_link.bw_bytes_per_s)
        else:
            graph.add_edge(i - 1, i, kind="wafer-link", hops=1, latency_s=wafer.global_link.latency_s, links=1,
                           bw_bytes_per_s=wafer.global_link.bw_bytes_per_s)
    return graph
