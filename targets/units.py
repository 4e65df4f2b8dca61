"""Quantities with units for target files: '230 MB', '220 MiB', '14 GB/s', '240 ns', '900 MHz', '750 TOPS'."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ir.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of quantity: its unit spellings (factor to SI base units), an example for errors,
    and the spelling of the base unit itself (what a target file is written in)."""

    name: str
    example: str
    units: dict[str, Decimal]
    integral: bool = False
    base: str = ""


_DECIMAL = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _scaled(suffixes: tuple[str, ...], prefixes: dict[str, int], base: Decimal = Decimal(1)) -> dict[str, Decimal]:
    return {p + s: base * prefixes[p] for p in prefixes for s in suffixes}


def _size_units() -> dict[str, Decimal]:
    # "KB" is read as 1000 bytes like "kB": decimal and binary prefixes are kept strictly apart.
    return _scaled(("B",), _DECIMAL) | _scaled(("B",), _BINARY)


def _rate_units() -> dict[str, Decimal]:
    # Upper-case B counts bytes, lower-case b counts bits (so "400 Gb/s" is 50 GB/s).
    units = _scaled(("B/s", "Bps"), _DECIMAL) | _scaled(("B/s",), _BINARY)
    return units | _scaled(("b/s", "bps"), _DECIMAL, Decimal(1) / 8)


def _time_units() -> dict[str, Decimal]:
    return {
        "s": Decimal(1),
        "ms": Decimal("1e-3"),
        "us": Decimal("1e-6"),
        "µs": Decimal("1e-6"),
        "ns": Decimal("1e-9"),
        "ps": Decimal("1e-12"),
    }


def _per_cycle_units() -> dict[str, Decimal]:
    return _scaled(("B/cycle",), _DECIMAL) | _scaled(("B/cycle",), _BINARY)


def _per_weight_units() -> dict[str, Decimal]:
    return {"B": Decimal(1), "bit": Decimal(1) / 8, "bits": Decimal(1) / 8}


def _ops_units() -> dict[str, Decimal]:
    return _scaled(("OPS", "OP/s", "FLOPS", "FLOP/s"), _DECIMAL)


SIZE = Kind("size", "'230 MB'", _size_units(), integral=True, base="B")
RATE = Kind("bandwidth", "'14 GB/s'", _rate_units(), base="B/s")
TIME = Kind("time", "'240 ns'", _time_units(), base="s")
FREQUENCY = Kind("frequency", "'900 MHz'", _scaled(("Hz",), _DECIMAL), base="Hz")
OPS = Kind("rate of operations", "'750 TOPS'", _ops_units(), base="OPS")
PER_CYCLE = Kind("bandwidth per clock cycle", "'10240 B/cycle'", _per_cycle_units(), base="B/cycle")
PER_WEIGHT = Kind("size of one weight", "'2 B' or '4 bit'", _per_weight_units(), base="B")

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


def parse_quantity(value: object, kind: Kind, where: str) -> float | int:
    """Parse a TOML string such as '240 ns' as a quantity of `kind` in SI base units; `where` prefixes
    errors ('file: field'). A bare number is refused: 240 could be seconds or nanoseconds."""
    number = _exact(value, kind, where)
    if kind.integral:
        if number != number.to_integral_value():
            raise ConfigError(f"{where}: {_show(value)} is not a whole number of bytes")
        return int(number)
    return float(number)


def _exact(value: object, kind: Kind, where: str) -> Decimal:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        raise _bare(value, kind, where)
    if not isinstance(value, str):
        raise _expected(value, kind, where)
    match = _QUANTITY.match(value)
    unit = match.group(2) if match else None
    if unit == "":
        raise _bare(value, kind, where)
    if unit is None or unit not in kind.units:
        raise _expected(value, kind, where)
    try:
        return Decimal(match.group(1)) * kind.units.get(unit, Decimal(1))
    except InvalidOperation:
        raise _expected(value, kind, where) from None


def _expected(value: object, kind: Kind, where: str) -> ConfigError:
    return ConfigError(f"{where}: expected a {kind.name} like {kind.example}, got {_show(value)}")


def _bare(value: object, kind: Kind, where: str) -> ConfigError:
    return ConfigError(f"{where}: {_show(value)} has no unit; give the {kind.name} with its unit, like {kind.example}")


def format_quantity(value: float | int, kind: Kind) -> str:
    """`value` (SI base units) spelled so that parse_quantity gives back exactly the same number:
    '56000000000000.0 B/s', '2.4e-07 s', '230686720 B'."""
    number = str(int(value)) if kind.integral else repr(float(value))
    return f"{number} {kind.base}"


def _show(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def format_size(n_bytes: int) -> str:
    """An exact spelling of a byte count with the largest unit that divides it: '220 MiB', '230 MB', '12345 B'."""
    for prefix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki", "E", "P", "T", "G", "M", "k"):
        factor = _BINARY.get(prefix) or _DECIMAL[prefix]
        if n_bytes and n_bytes % factor == 0:
            return f"{n_bytes // factor} {prefix}B"
    return f"{n_bytes} B"
