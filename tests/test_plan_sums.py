"""The chip planner's prefill sums, kept every SUMS_EVERY units from a stage's first and the last built, give
every stage, asked in any order, the floats its units' figures and boundaries summed afresh give."""

import json
import random
from pathlib import Path

from compiler.backends.chips import planner
from compiler.backends.chips.planner import ChipLayout, _boundaries
from compiler.frontend.options import CompileOptions
from compiler.partition.cost import Breakdown
from compiler.planner import lower
from targets import load_target


def test_stages_asked_in_any_order_sum_as_afresh(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "SUMS_EVERY", 3)  # kept sums inside the stages of a 10-unit model
    config = json.loads(Path("examples/models/tiny-llama.json").read_text()) | {"num_hidden_layers": 8}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    options = CompileOptions(context=32, prompt=16, prefill_chunk=8)
    system = load_target("lpu-mini")
    _, graphs = lower(str(path), options, system, system)
    layout = ChipLayout.of(graphs.decode, graphs.prefill, system, options)
    cands = [c for c in layout.candidates if c.stop - c.first > 3]
    assert len(layout.units_) == 10 and len(cands) > 50
    asks = [(c, chunk, across) for c in cands for chunk in (4, 8) for across in (False, True)]
    random.Random(0).shuffle(asks)
    for c, chunk, across in asks + asks[::-1]:
        pre = layout._prefill_costs(c, chunk, None)
        afresh = Breakdown.sum_of(layout._unit_figures(p, across)[0] for p in pre) + _boundaries(
            pre, layout._run_starts(layout.units_[c.first:c.stop]), system)
        assert layout._units_prefill(c, chunk, None, across) == afresh
