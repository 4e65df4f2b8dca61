"""The fewest chips with work a model's candidate stages allow on lpu, and the chips that path spans laid out
by the placement's rules: what a feature that shrinks stages brings the capacity to, apart from where the
footprint objective then puts the stages (plan.search.choose)."""

from compiler.backends.chips.planner import ChipLayout
from compiler.frontend.options import CompileOptions
from compiler.partition import dp
from compiler.plan import search
from compiler.planner import lower
from targets import load_target


def fewest_chips(model: str, options: CompileOptions | None = None) -> tuple[int, int]:
    """(chips, chips spanned) of the fewest-chips path, as --objective chips chose it before it weighed spans."""
    options = options or CompileOptions()
    system = load_target("lpu")
    _, graphs = lower(model, options, system, system)
    layout = ChipLayout.of(graphs.decode, graphs.prefill, system, options)
    path = dp.fewest_chips(layout.candidates, layout.units)
    _, path = search._split_where_it_pays(layout.candidates, layout.units, path, system.max_chips)
    return sum(c.tp for c in path), search._span(path, layout)
