"""Reading a build directory for `run` and `inspect`: every file checked against the manifest first.

The target comes from the build's own target.toml (written in full by `compile`), never from the
file or preset it was compiled with, so a build stays runnable when that file changes or goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir.build_io import BuildFiles
from ir.errors import ParseError, SramflowError
from ir.image_io import loads_image
from ir.isa import Op
from ir.memory_map import MemoryMap
from ir.program import Flag, Program
from ir.program_io import loads
from targets.loader import loads_target
from targets.spec import SystemSpec

TARGET_FILE = "target.toml"
IMAGE_FILE = "sram.img"
PLAN_KEYS = ("model", "target", "chips", "options", "stages", "decode", "prefill", "totals")
PHASES = ("decode", "prefill")
VERIFY = "verify"  # a speculative build's verify step (verify.prog), beside its proposer's build
PROPOSERS = ("draft", "mtp")  # the sub-build a speculative build holds: a draft model's, or the MTP module's


@dataclass(frozen=True)
class Build:
    """A verified build: its target, plan, memory map and both phases' Programs. The SRAM image
    is read (and verified) only when a functional run asks for it."""

    files: BuildFiles
    system: SystemSpec
    plan: dict
    memory: MemoryMap
    programs: dict[str, Program]
    proposer: Build | None = None  # a speculative build's draft (or MTP) build
    proposer_kind: str | None = None

    @property
    def speculative(self) -> bool:
        return VERIFY in self.programs

    @property
    def path(self) -> Path:
        return self.files.path

    @property
    def context(self) -> int:
        return self.memory.context

    @property
    def recurrent(self) -> bool:
        """Mamba state: it runs on through every row, padding included."""
        return self.memory.recurrent

    @property
    def ring(self) -> bool:
        """A KV cache whose SRAM part is a ring of the newest positions (ir.ops._tiered): a WRITE with
        WINDOW and a ring length `n`. Padding rows would take it for the newest positions."""
        body = self.programs["prefill"].body
        return bool(((body["op"] == Op.WRITE) & (body["flags"] & Flag.WINDOW != 0) & (body["n"] > 0)).any())

    @property
    def whole_chunks(self) -> bool:
        """Prefill keeps only a prompt's whole chunks (a Mamba state or a ring would take padding rows as
        its own); the rest of the prompt runs through decode steps."""
        return self.recurrent or self.ring

    @property
    def has_image(self) -> bool:
        return self.files.has(IMAGE_FILE)

    def image(self) -> dict[int, np.ndarray]:
        """Every chip's SRAM bytes (weights at their addresses, caches zeroed)."""
        return self._parsed(IMAGE_FILE, lambda data: loads_image(data, str(self.path / IMAGE_FILE))[0])

    def _parsed(self, name: str, parse):
        try:
            return parse(self.files.bytes(name))
        except ParseError as err:  # the sha256 matched, so the compiler wrote it this way
            raise self.files.damaged(str(err)) from None


def load_build(path: str | Path) -> Build:
    """The build at `path`, or one line saying why it cannot be used."""
    files = BuildFiles(path)
    system = _target(files)
    plan = files.json("plan.json", PLAN_KEYS)
    memory = _memory(files)
    phases = (*PHASES, VERIFY) if files.has(f"{VERIFY}.prog") else PHASES
    programs = {phase: _program(files, phase) for phase in phases}
    names = {"manifest.json": files.manifest.target, "plan.json": plan["target"],
             **{f"{p}.prog": programs[p].target for p in phases}}
    for name, target in names.items():
        if target != system.name:
            raise files.damaged(f"{name} names target {target!r}, {TARGET_FILE} is {system.name!r}")
    for phase, program in programs.items():
        if program.phase != phase:
            raise files.damaged(f"{phase}.prog holds the {program.phase} phase")
    kind, proposer = _proposer(files, VERIFY in programs)
    return Build(files, system, plan, memory, programs, proposer, kind)


def _proposer(files: BuildFiles, speculative: bool) -> tuple[str | None, Build | None]:
    """A speculative build's proposer sub-build, verified on its own and against the digest the
    manifest recorded for it."""
    recorded = files.manifest.builds or {}
    kinds = [k for k in PROPOSERS if k in recorded]
    if not speculative:
        return None, None
    if len(kinds) != 1 or len(recorded) != 1:
        raise files.damaged(f"verify.prog needs one proposer sub-build ({' or '.join(PROPOSERS)}/), the manifest "
                            f"records {sorted(recorded)}")
    kind = kinds[0]
    build = load_build(files.path / kind)
    if json.loads((files.path / kind / "manifest.json").read_text())["digest"] != recorded[kind]:
        raise files.damaged(f"{kind}/ is not the build it was written with")
    return kind, build


def _memory(files: BuildFiles) -> MemoryMap:
    try:
        return MemoryMap.loads(files.bytes("memory.json").decode("utf-8"), str(files.path / "memory.json"))
    except (UnicodeDecodeError, ParseError) as err:
        raise files.damaged(str(err)) from None


def _target(files: BuildFiles) -> SystemSpec:
    data = files.bytes(TARGET_FILE)
    try:
        return loads_target(data.decode("utf-8"), files.path / TARGET_FILE)
    except (UnicodeDecodeError, SramflowError) as err:
        raise files.damaged(f"{TARGET_FILE} does not load ({err})") from None


def _program(files: BuildFiles, phase: str) -> Program:
    name = f"{phase}.prog"
    try:
        return loads(files.bytes(name), str(files.path / name))
    except ParseError as err:
        raise files.damaged(str(err)) from None
