"""The wafer's arrival rule for targets/messages.py: a roles-dialect Program's streams placed on the mesh.

meta["stages"] gives each stage's region and first stream, meta["roles"][s] stream s's role (the cores at
one position class of the region's reduction trees, targets/mesh.py's `Roles`), meta["replicas"][s] its
cores. Each stage's roles are re-derived from its region, which must lie on a wafer, apart from the others
(`roles` otherwise). A SEND names its route, never its distance; the hops come from the places of its
stream and of the stream it names (`peer`), and every receiver sits where the route delivers:
  FEED          a root stream to its region: rows + cols - 2
  ROWS, COLS    tree level `imm` down the rows (a row role sending at it) or along the first row (a root
                role sending or receiving at it): tree_halves(rows or cols)[imm]; `imm` is -1 elsewhere
  NEXT_REGION   to the named stream's region on the same wafer: the regions' gap (region_hops)
  NEXT_WAFER    to another wafer: both half-perimeters, mesh_rows + mesh_cols, over its wafer link
  (HOST)        rows the host sends (--embed-on-host): half a mesh perimeter over the wafer link
A SEND over the wafer link leaves on a core's unit 2, any other on the fabric's unit 0 (`link-range`
otherwise; messages.py holds each RECV to its SEND's link class); arrival is Timing.arrival of the hops.
"""

from __future__ import annotations

import json

import numpy as np

from ir.contract import Route
from ir.program import Program
from targets.hazards import Rows
from targets.mesh import Region, Roles, region_hops, tree_halves
from targets.spec import SystemSpec
from targets.timing import Timing
from targets.views import RowsView

FABRIC_SEND, FABRIC_RECV, WAFER_SEND, WAFER_RECV = 0, 1, 2, 3  # C2C unit indices of a wafer core


class MeshRoutes:
    """Each stream's (stage, region, role) from the metadata, found once a Program, and the hops between."""

    def __init__(self, program: Program, wafer: SystemSpec, hazards):
        first = np.unique(program.inst["chip"], return_index=True)[1]
        c = program.expand(first, origin=True)  # each stream's first row locates its `roles` hazards
        c = {n: a[np.r_[True, c["chip"][1:] != c["chip"][:-1]]] if len(a) else a for n, a in c.items()}
        found = Rows(hazards, c["_inst"], c["_row"])
        self.places = stream_places(RowsView(program, c), wafer, found)
        for k in np.flatnonzero([self.places[s] is None for s in c["chip"].tolist()]).tolist():
            found.add(k, "roles", f"stream {c['chip'][k]} has no place on the mesh: its messages cannot be timed")
        self.stage = np.array([-1 if p is None else p[0] for p in self.places], np.int64)
        self.wafer, self.timing, self.place = wafer, Timing.of(wafer), "stage"
        self.host_cycles = self.timing.arrival((wafer.mesh_rows + wafer.mesh_cols) // 2, WAFER_SEND)

    def cycles(self, c: dict[str, np.ndarray], sends: np.ndarray, found) -> np.ndarray:
        """Cycles from each send's start until its data is at the stream it names (-1: its route cannot reach)."""
        return np.array([self._cycles(c, s, found) for s in sends.tolist()], np.int64)

    def delivers(self, c: dict[str, np.ndarray], sends: np.ndarray, recvs: np.ndarray) -> tuple[np.ndarray, ...]:
        """(the stage each send's route delivers to, the receiver's stage)."""
        inside = np.isin(c["route"][sends], (Route.FEED, Route.ROWS, Route.COLS))
        where = np.where(inside, self.stage[c["chip"][sends]], self.stage[c["peer"][sends]])
        return where, self.stage[c["chip"][recvs]]

    def _cycles(self, c: dict[str, np.ndarray], i: int, found) -> int:
        src, dst, route, level = self.places[c["chip"][i]], self.places[c["peer"][i]], int(c["route"][i]), \
            int(c["imm"][i])
        if src is None or dst is None:
            return -1
        hops = _hops(route, level, src, dst, self.wafer)
        if hops < 0 or c["unit"][i] != (WAFER_SEND if route == Route.NEXT_WAFER else FABRIC_SEND):
            name = Route(route).name if route in {r.value for r in Route} else f"route {route}"
            found.add(i, "link-range", f"a {name} message (imm={level}) from stage {src[0]}'s {src[2]} stream on "
                                       f"link unit {c['unit'][i]} cannot reach stream {c['peer'][i]} of stage {dst[0]}")
            return -1
        return self.timing.arrival(hops, int(c["unit"][i]))


def _hops(route: int, level: int, src: tuple, dst: tuple, wafer: SystemSpec) -> int:
    """The table in the docstring: a route's hops from place `src` to place `dst`, -1 if it cannot reach."""
    (_, region, role), stay = src, dst[0] == src[0]
    if route in (Route.ROWS, Route.COLS):
        halves = tree_halves(region.rows if route == Route.ROWS else region.cols)
        at = role[1] == level or (route == Route.COLS and level in role[2])
        fits = stay and at and (role[0] == "root") == (route == Route.COLS) and 0 <= level < len(halves)
        return halves[level] if fits else -1
    if level != -1:
        return -1  # only a tree route names a level
    if route == Route.FEED and stay and role[0] == "root":
        return region.rows + region.cols - 2
    if route == Route.NEXT_REGION and not stay and dst[1].wafer == region.wafer:
        return region_hops(region, dst[1])
    if route == Route.NEXT_WAFER and dst[1].wafer != region.wafer:
        return wafer.mesh_rows + wafer.mesh_cols
    return -1


def stream_places(program, wafer: SystemSpec, found) -> list[tuple | None]:
    """Every stream's (stage, region, role), from the metadata checked against the region geometry
    (None, and a `roles` hazard at the stage's first row, where it does not place the stream)."""
    meta, streams, taken = program.meta, program.chips, {}
    first = np.searchsorted(program.cols["chip"], np.arange(streams)).clip(0, max(0, len(program.cols["chip"]) - 1))
    wafers, places = wafer.max_chips // max(1, wafer.chips_per_node), [None] * streams
    for st in meta.get("stages", []):
        try:
            region, base, count = Region(**st["region"]), int(st["first_stream"]), int(st["streams"])
        except (KeyError, TypeError, ValueError):
            found.add(0, "roles", f"stage {st.get('index', '?')}: no region and first stream in the metadata")
            continue
        at = int(first[base]) if 0 <= base < streams else 0
        mesh = taken.setdefault(region.wafer, np.zeros((wafer.mesh_rows, wafer.mesh_cols), bool))
        cells = mesh[max(0, region.row):region.row + region.rows, max(0, region.col):region.col + region.cols]
        if not 0 <= region.wafer < wafers or cells.shape != (region.rows, region.cols) or not cells.size:
            found.add(at, "roles", f"stage {st['index']}: region {region.to_dict()} is not on the "
                                   f"{wafer.mesh_rows}x{wafer.mesh_cols} mesh of {wafers} wafers")
            continue
        if cells.any():
            found.add(at, "roles", f"stage {st['index']}: region {region.to_dict()} overlaps another stage's")
        cells[:] = True
        roles = Roles.of(region.rows, region.cols)
        listed = json.dumps([meta.get(k, [])[base:base + count] for k in ("roles", "replicas")], default=int)
        derived = json.dumps([[[st["index"], *k] for k in roles.keys], list(roles.replicas)], default=int)
        if listed != derived or base < 0 or base + count > streams or any(places[base:base + count]):
            found.add(at, "roles", f"stage {st['index']}: a {region.rows}x{region.cols} region runs {len(roles)} "
                                   f"role streams {list(roles.replicas)} cores each, the Program lists {count} at "
                                   f"stream {base}")
            continue
        places[base:base + count] = [(int(st["index"]), region, key) for key in roles.keys]
    return places
