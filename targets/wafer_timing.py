"""Message rules for roles-dialect Programs: one "chip" of the Program is one role stream of a region's cores.

A wafer Program (compiler/backends/wafer/lower.py) runs the cores of a region as a few role streams
(the cores at one position class of the region's reduction trees, targets/mesh.py's `Roles`);
Program.meta["stages"] gives every stage's region and first stream, meta["roles"][s] the role of
stream s and meta["replicas"][s] how many cores run it. The interpreter maps every stream back onto
the mesh itself: each stage's roles are re-derived from its region's shape and must be exactly the
ones the Program lists (`roles` hazards otherwise), the regions must lie on the wafers and not
overlap. The instruction timings are targets/timing.py's one Timing at a core's rates.

A SEND names its `route`, never its distance; the hops come from the geometry:

  FEED         the region's first row to every core: rows + cols - 2
  ROWS level j the 2-way tree down the rows (`imm` = j): tree_halves(rows)[j]; row-role senders of level j
  COLS level j the tree along the first row's columns: tree_halves(cols)[j]; first-row streams
  NEXT_REGION  to the next stage's region on the same wafer: the regions' gap (targets.mesh.region_hops)
  NEXT_WAFER   to a region of another wafer: out of one mesh and into the other (mesh_rows + mesh_cols
               hops: both half-perimeters), plus the wafer link's latency
  (HOST)       a RECV from HOST (--embed-on-host): half the mesh's perimeter plus the wafer link

A RECV naming (sending stream, tag) may start no earlier than that SEND's start + hops x the fabric's
hop latency (+ the wafer link's). One SEND may feed the RECVs of several streams (the fabric's routers
multicast a colour), so pairing is by (sender stream, tag): every RECV names a SEND that exists and
sits where the route delivers (its region, or the next one), their byte counts agree, and every SEND's
message is received by some stream. The senders of one tag (a tree level's senders) start together,
so the named one stands for them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.contract import Route
from ir.isa import Op, UnitKind
from ir.program import HOST, Program
from targets.mesh import Region, Roles, region_hops, tree_halves
from targets.spec import SystemSpec
from targets.timing import Timing

FABRIC_SEND, FABRIC_RECV, WAFER_SEND, WAFER_RECV = 0, 1, 2, 3  # C2C unit indices of a wafer core
FAR = (Route.NEXT_WAFER,)  # routes over the wafer link (units 2, 3)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a stream's cores sit: its stage's region and its role there."""

    stage: int
    region: Region
    role: tuple  # ("root" | "row", send level, receive levels)

    @property
    def root(self) -> bool:
        return self.role[0] == "root"


def stream_places(program: Program, wafer: SystemSpec, found) -> list[Place | None]:
    """Every stream's place, from the Program's metadata checked against the region geometry;
    a stream the metadata does not place consistently is None (and a `roles` hazard)."""
    c, meta = program.cols, program.meta
    first_row = _first_rows(c, program.chips)
    places: list[Place | None] = [None] * program.chips
    claimed = set()
    wafers = wafer.max_chips // max(1, wafer.chips_per_node)
    regions: list[Region] = []
    for st in meta.get("stages", []):
        try:
            region = Region(**st["region"])
            base, count = int(st["first_stream"]), int(st["streams"])
        except (KeyError, TypeError, ValueError):
            found.add(0, "roles", f"stage {st.get('index', '?')}: no region and first stream in the metadata")
            continue
        at = first_row[base] if 0 <= base < program.chips else 0
        if not (0 <= region.wafer < wafers and region.row >= 0 and region.col >= 0 and region.rows > 0
                and region.cols > 0 and region.row + region.rows <= wafer.mesh_rows
                and region.col + region.cols <= wafer.mesh_cols):
            found.add(at, "roles", f"stage {st['index']}: region {region.to_dict()} is not on the "
                                   f"{wafer.mesh_rows}x{wafer.mesh_cols} mesh of {wafers} wafers")
            continue
        for other in regions:
            if _overlap(region, other):
                found.add(at, "roles", f"stage {st['index']}: region {region.to_dict()} overlaps "
                                       f"{other.to_dict()}")
        regions.append(region)
        roles = Roles.of(region.rows, region.cols)
        listed = [tuple(_role(meta, s)) for s in range(base, base + count)]
        expected = [(st["index"], *k) for k in roles.keys]
        replicas = [meta.get("replicas", [])[s] if s < len(meta.get("replicas", [])) else None
                    for s in range(base, base + count)]
        if listed != expected or replicas != list(roles.replicas) or claimed & set(range(base, base + count)):
            found.add(at, "roles", f"stage {st['index']}: a {region.rows}x{region.cols} region runs "
                                   f"{len(roles)} role streams {list(roles.replicas)} cores each, the Program "
                                   f"lists {count} at stream {base} ({replicas})")
            continue
        claimed |= set(range(base, base + count))
        for s, key in zip(range(base, base + count), roles.keys, strict=True):
            places[s] = Place(int(st["index"]), region, key)
    return places


def check_links(program: Program, wafer: SystemSpec, start: np.ndarray, found,
                places: list[Place | None] | None = None) -> None:
    """Links and messages of a roles-dialect Program (or a view of some of its rows, with the streams'
    `places` found once); `found.add(row, kind, detail)` records a hazard."""
    c, timing = program.cols, Timing.of(wafer)
    places = stream_places(program, wafer, found) if places is None else places
    unplaced = np.array([p is None for p in places], bool)
    rows = np.flatnonzero(unplaced[c["chip"]]) if len(c["chip"]) else np.zeros(0, np.int64)
    if len(rows):
        found.add(int(rows[0]), "roles", f"stream {c['chip'][rows[0]]} has no place on the mesh; its "
                                         f"{len(rows)} instructions cannot be timed")
    c2c = c["kind"] == UnitKind.C2C
    wrong = c2c & ((c["unit"] > WAFER_RECV) | ((c["op"] == Op.SEND) != (c["unit"] % 2 == 0)))
    found.where(wrong, "link-range", lambda i: f"{Op(c['op'][i]).name.lower()} on link unit {c['unit'][i]}: a "
                                               "core has fabric send 0, receive 1, wafer link send 2, receive 3")
    sends = np.flatnonzero(c["op"] == Op.SEND)
    hops = np.array([_hops(c, i, places, wafer, found) for i in sends.tolist()], np.int64)
    key_s = (c["chip"][sends].astype(np.int64) << 32) | c["tag"][sends].astype(np.int64)
    order = np.argsort(key_s, kind="stable")
    sends, key_s, hops = sends[order], key_s[order], hops[order]
    recvs = np.flatnonzero(c["op"] == Op.RECV)
    _host_messages(c, recvs[c["peer"][recvs] == HOST], wafer, timing, start, found)
    recvs = recvs[c["peer"][recvs] != HOST]
    key_r = (c["peer"][recvs].astype(np.int64) << 32) | c["tag"][recvs].astype(np.int64)
    at = np.minimum(np.searchsorted(key_s, key_r), max(0, len(sends) - 1))
    found_send = (at < len(sends)) & (key_s[at] == key_r) if len(sends) else np.zeros(len(recvs), bool)
    for r in recvs[~found_send].tolist():
        found.add(r, "unmatched", f"receive from stream {c['peer'][r]} tag {c['tag'][r]} has no send")
    r, s, h = recvs[found_send], sends[at[found_send]], hops[at[found_send]]
    for i in np.flatnonzero(c["src_bytes"][s] != c["dst_bytes"][r]).tolist():
        found.add(int(r[i]), "unmatched", f"receives {c['dst_bytes'][r[i]]} bytes, the send carries "
                                          f"{c['src_bytes'][s[i]]}")
    for recv, send in zip(r.tolist(), s.tolist(), strict=True):
        _check_receiver(c, recv, send, places, found)
    far = np.isin(c["route"][s], FAR)
    arrival = start[s] + np.maximum(h, 0) * timing.local.latency_cycles + np.where(far, timing.remote.latency_cycles, 0)
    for i in np.flatnonzero((h >= 0) & (start[r] < arrival)).tolist():
        found.add(int(r[i]), "recv-early", f"starts at {start[r[i]]}, the data from stream {c['peer'][r[i]]} "
                                           f"arrives at {arrival[i]} ({h[i]} hops, {Route(c['route'][s[i]]).name})")
    lonely = ~np.isin(c["tag"][sends], c["tag"][recvs])
    for i in sends[lonely].tolist():
        found.add(i, "unmatched", f"send tag {c['tag'][i]} is received by no stream")


def _hops(c: dict[str, np.ndarray], i: int, places: list[Place | None], wafer: SystemSpec, found) -> int:
    """The hops SEND row i's route takes from its stream's place, or -1 (and a hazard) if it has none."""
    src, route, level = places[c["chip"][i]], int(c["route"][i]), int(c["imm"][i])
    peer = int(c["peer"][i])
    dst = places[peer] if 0 <= peer < len(places) else None
    if src is None or dst is None:
        if dst is None and not 0 <= peer < len(places):
            found.add(i, "link-range", f"peer {peer} is no stream of the program (0..{len(places) - 1})")
        return -1
    far = route in FAR
    if c["unit"][i] != (WAFER_SEND if far else FABRIC_SEND):
        found.add(i, "link-range", f"a {_name(route)} message leaves on link unit {c['unit'][i]}, not "
                                   f"{WAFER_SEND if far else FABRIC_SEND}")
    region = src.region
    if route not in (Route.ROWS, Route.COLS) and level != -1:
        found.add(i, "link-range", f"imm={level}: a {_name(route)} message names no tree level (only ROWS and "
                                   "COLS do)")
    if route == Route.FEED and src.root and dst.stage == src.stage:
        return region.rows + region.cols - 2
    if route in (Route.ROWS, Route.COLS) and dst.stage == src.stage:
        halves = tree_halves(region.rows if route == Route.ROWS else region.cols)
        fits = (not src.root and src.role[1] == level) if route == Route.ROWS else \
            (src.root and (src.role[1] == level or level in src.role[2]))
        if 0 <= level < len(halves) and fits:
            return halves[level]
        found.add(i, "link-range", f"{_name(route)} level {level}: a {region.rows}x{region.cols} region's "
                                   f"{'row' if route == Route.ROWS else 'column'} tree has levels "
                                   f"0..{len(halves) - 1}, and role {src.role} sends at none of them")
        return -1
    if route == Route.NEXT_REGION and dst.stage != src.stage and dst.region.wafer == region.wafer:
        return region_hops(region, dst.region)
    if route == Route.NEXT_WAFER and dst.region.wafer != region.wafer:
        return wafer.mesh_rows + wafer.mesh_cols
    found.add(i, "link-range", f"a {_name(route)} message from stage {src.stage} ({src.role[0]} role) cannot reach "
                               f"stream {peer} of stage {dst.stage}" + ("" if route else ": a SEND names its route"))
    return -1


def _check_receiver(c: dict[str, np.ndarray], recv: int, send: int, places: list[Place | None], found) -> None:
    """The receiving stream sits where its SEND's route delivers: the sender's region for its trees and
    feeds, the region the SEND names for a hand-off."""
    got, src, named = places[c["chip"][recv]], places[c["chip"][send]], places[c["peer"][send]]
    if got is None or src is None or named is None:
        return
    route = int(c["route"][send])
    inside = route in (Route.FEED, Route.ROWS, Route.COLS)
    if (got.stage == src.stage) != inside or (not inside and got.stage != named.stage):
        found.add(recv, "link-range", f"receives a {_name(route)} message of stage {src.stage}, but sits in stage "
                                      f"{got.stage}")
    far = route in FAR
    if c["unit"][recv] != (WAFER_RECV if far else FABRIC_RECV):
        found.add(recv, "link-range", f"a {_name(route)} message arrives on link unit {c['unit'][recv]}, not "
                                      f"{WAFER_RECV if far else FABRIC_RECV}")


def _host_messages(c: dict[str, np.ndarray], recvs: np.ndarray, wafer: SystemSpec, timing: Timing,
                   start: np.ndarray, found) -> None:
    """Rows the host sends (--embed-on-host) come in over the wafer link, at the earliest its latency plus
    half the mesh's perimeter after the step begins."""
    far = c["unit"][recvs] >= WAFER_SEND
    for i in recvs[~far].tolist():
        found.add(i, "link-range", "a message from the host arrives over the wafer link (unit 3), not the fabric")
    earliest = (wafer.mesh_rows + wafer.mesh_cols) // 2 * timing.local.latency_cycles + timing.remote.latency_cycles
    for i in recvs[far & (start[recvs] < earliest)].tolist():
        found.add(i, "recv-early", f"starts at {start[i]}, rows from the host arrive at {earliest} at the earliest")


def _first_rows(c: dict[str, np.ndarray], streams: int) -> np.ndarray:
    """Each stream's first instruction row (0 for a stream with none), to locate its hazards."""
    chips = c["chip"]
    first = np.searchsorted(chips, np.arange(streams))
    return np.where(first < len(chips), first, 0)


def _role(meta: dict, s: int) -> list:
    try:
        stage, kind, level, receives = meta.get("roles", [])[s]
        return [stage, kind, level, tuple(receives)]
    except (IndexError, TypeError, ValueError):
        return []


def _overlap(a: Region, b: Region) -> bool:
    return a.wafer == b.wafer and a.row < b.row + b.rows and b.row < a.row + a.rows \
        and a.col < b.col + b.cols and b.col < a.col + a.cols


def _name(route: int) -> str:
    try:
        return Route(route).name
    except ValueError:
        return f"route {route}"
