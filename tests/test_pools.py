"""`plan --prefill-target T1 --decode-target T2 --rate R --prompt S --output N`: pools sized for a load, checked
by hand arithmetic on tiny-llama; the KV hand-off over the pool links; loads no pool meets; the pool link
in target files."""

import contextlib
import io
import json
import math

import pytest

from compiler.cli import main
from compiler.serving.handoff import Handoff
from ir.errors import ConfigError
from targets import LinkSpec, load_target

RATE, PROMPT, OUTPUT = 2e6, 16, 64
LOAD = ["tiny-llama", "--rate", str(RATE), "--prompt", str(PROMPT), "--output", str(OUTPUT), "--prefill-chunk", "16"]
# lpu-mini with a slow, high-latency link to other pools: 1 GB/s and 10 µs.
POOLS = ["--prefill-target", "lpu-mini", "--decode-target", "lpu-mini"]
SLOW_LINK = 'base = "lpu-mini"\nname = "mini-slow-link"\n[pool_link]\nbw_bytes_per_s = "1 GB/s"\nlatency_s = "10 us"\n'


def _json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def served() -> dict:
    return _json(["plan", *LOAD, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini"])["serving"]


@pytest.fixture(scope="module")
def slow_link(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("target") / "mini-slow-link.toml"
    path.write_text(SLOW_LINK)
    return str(path)


def _period_s(plan: dict) -> float:
    return min(plan["prefill"]["period_ms"] * 1e-3, plan["prefill"]["ttft_ms"] * 1e-3)


def test_prefill_pool_by_hand(served):
    plan, pool = served["plans"]["prefill"], served["prefill"]
    b = plan["options"]["batch"]
    assert (plan["options"]["context"], plan["options"]["prompt"]) == (PROMPT, PROMPT)
    per_replica = b * PROMPT / _period_s(plan)
    assert pool["batch"] == b and math.isclose(pool["prompt_tokens_per_s_per_replica"], per_replica)
    assert pool["replicas"] == math.ceil(RATE * PROMPT / per_replica) > 1
    assert pool["devices"] == pool["replicas"] * plan["chips"]
    assert math.isclose(pool["utilisation"], RATE * PROMPT / (pool["replicas"] * per_replica))


def test_prefill_batch_has_the_fewest_devices(served):
    """Every power-of-two prefill batch planned by hand: none needs fewer devices than the one chosen."""
    from compiler.frontend.options import CompileOptions
    from compiler.planner import make_plan
    from ir.errors import DoesNotFitError

    chosen, tried = served["prefill"], 0
    for b in (1, 2, 4, 8, 16, 32, 64):
        try:
            plan = make_plan("tiny-llama", "lpu-mini", CompileOptions(batch=b, context=PROMPT, prompt=PROMPT,
                                                                     prefill_chunk=16)).to_dict()
        except DoesNotFitError:
            break  # nor does any larger batch
        tried += 1
        devices = math.ceil(RATE * PROMPT / (b * PROMPT / _period_s(plan))) * plan["chips"]
        assert devices >= chosen["devices"]
    assert tried > 2


def test_decode_pool_by_hand(served):
    prefill, plan, pool, h = served["plans"]["prefill"], served["plans"]["decode"], served["decode"], served["handoff"]
    assert plan["options"]["context"] == PROMPT + OUTPUT
    # The hand-off: one sequence's cache at the prompt, over the slower side's pool links.
    kv = prefill["totals"]["kv_cache_bytes"] / prefill["options"]["batch"]
    assert kv == 2 * 2 * 32 * PROMPT * 2  # 2 layers x (k, v) x 32 wide x 16 tokens x 2 bytes
    link = load_target("lpu-mini").pool_link
    senders = sum(s["tp"] for s in prefill["stages"] if s["memory_per_chip_bytes"]["kv_cache"])
    receivers = sum(s["tp"] for s in plan["stages"] if s["memory_per_chip_bytes"]["kv_cache"])
    handoff_s = link.latency_s + kv / (min(senders, receivers) * link.bw_bytes_per_s)
    assert h["bytes"] == kv and math.isclose(h["time_ms"], handoff_s * 1e3)
    # Little's law: a slot from the hand-off to the last token.
    tokens_per_s = plan["decode"]["tokens_per_s"]
    concurrent = RATE * (handoff_s + OUTPUT / tokens_per_s)
    assert math.isclose(pool["concurrent_sequences"], concurrent)
    assert pool["replicas"] == math.ceil(concurrent / plan["options"]["batch"])
    assert pool["devices"] == pool["replicas"] * plan["chips"]
    assert tokens_per_s >= served["min_tokens_per_s"]
    assert math.isclose(served["decode"]["ttft_ms"], served["prefill"]["ttft_ms"] + handoff_s * 1e3)


def test_default_floor_is_half_the_batch_1_speed(served):
    one = _json(["plan", "tiny-llama", "--target", "lpu-mini", "--context", str(PROMPT + OUTPUT), "--prompt",
                 str(PROMPT), "--prefill-chunk", "16"])
    assert served["min_tokens_per_s"] == 0.5 * one["decode"]["tokens_per_s"]


def test_colocated_by_hand(served):
    """n replicas time-slicing prefill and decode meet the load; n - 1 do not."""
    c, plan = served["colocated"], served["plans"]["colocated"]
    b, tps, ttft_s = plan["options"]["batch"], plan["decode"]["tokens_per_s"], plan["prefill"]["ttft_ms"] * 1e-3
    prompt_rate = b * PROMPT / _period_s(plan)

    def meets(n: int) -> bool:
        share = RATE * PROMPT / (n * prompt_rate)
        speed = tps * (1 - share)
        return share < 1 and speed >= served["min_tokens_per_s"] and RATE * (ttft_s + OUTPUT / speed) <= n * b

    assert c["batch"] == b and meets(c["replicas"]) and not meets(c["replicas"] - 1)
    assert math.isclose(c["prefill_share"], RATE * PROMPT / (c["replicas"] * prompt_rate))
    assert math.isclose(c["tokens_per_s"], tps * (1 - c["prefill_share"]))


def test_printed_pools(capsys):
    assert main(["plan", *LOAD, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini"]) == 0
    out = capsys.readouterr().out
    for line in ("prefill     lpu-mini", "decode      lpu-mini", "co-located  lpu-mini", "KV hand-off:"):
        assert line in out


def test_handoff_is_bytes_over_the_link_plus_latency(slow_link):
    """One chip each side: bytes / bandwidth + latency, the slower side's link (1 GB/s, 10 µs) binding."""
    served = _json(["plan", "tiny-llama", "--rate", "10", "--prompt", "16", "--output", "16", "--prefill-target",
                    slow_link, "--decode-target", "lpu-mini"])["serving"]
    h = served["handoff"]
    assert (h["senders"], h["receivers"], h["binding"]) == (1, 1, "prefill")
    assert math.isclose(h["time_ms"], (h["bytes"] / 1e9 + 10e-6) * 1e3)


def test_handoff_takes_the_slower_sides_aggregate():
    fast, slow = LinkSpec(10e9, 1e-6), LinkSpec(1e9, 5e-6)
    h = Handoff(bytes=8e9, senders=2, receivers=8, send_link=fast, receive_link=slow)
    assert h.bw_bytes_per_s == min(2 * 10e9, 8 * 1e9) == 8e9
    assert h.binding == "decode" and h.latency_s == 5e-6
    assert math.isclose(h.time_s, 5e-6 + 8e9 / 8e9)


@pytest.mark.parametrize(("extra", "message"), [
    (["--min-tokens-per-s", "1e12"], "decode pool (lpu-mini): no batch keeps 1,000,000,000,000.0 tokens/s per user"),
    (["--max-ttft-ms", "1e-9"], "prefill pool (lpu-mini): no prefill batch meets --max-ttft-ms 1e-09"),
])
def test_a_load_no_pool_meets_names_the_pool(capsys, extra, message):
    assert main(["plan", *LOAD, "--prefill-target", "lpu-mini", "--decode-target", "lpu-mini", *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {message}") and err.count("\n") == 1


def test_a_sequence_no_replica_holds_names_the_pool(capsys):
    assert main(["plan", "tiny-llama", "--rate", "1", "--prompt", "1024", "--output", "200000", "--prefill-target",
                 "lpu-mini", "--decode-target", "lpu-mini"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sramflow: error: decode pool (lpu-mini): one sequence does not fit a replica at context "
                          "201024") and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--prefill-target", "lpu-mini"], "--prefill-target and --decode-target: give both"),
    (["--prefill-target", "lpu-mini", "--decode-target", "lpu-mini", "--output", "4"], "--rate: required"),
    (["--prefill-target", "lpu-mini", "--decode-target", "lpu-mini", "--rate", "1", "--output", "4"],
     "--prompt: required"),
    (["--rate", "1", "--output", "4"], "--prefill-target and --decode-target: give both"),
    ([*POOLS, "--rate", "1", "--prompt", "16", "--output", "4", "--target", "lpu"],
     "--target: pools size their own replicas"),
    ([*POOLS, "--rate", "1", "--prompt", "16", "--output", "4", "--context", "64"],
     "--context: pools size their own replicas"),
    (["--prefill-target", "lpu-mini", "--decode-target", "lpu-mini", "--rate", "0", "--prompt", "16", "--output", "4"],
     "--rate must be positive"),
    (["--prefill-target", "lpu-mini", "--decode-target", "lpx", "--rate", "1", "--prompt", "16", "--output", "4"],
     "unknown target 'lpx'"),
])
def test_pool_option_mistakes_are_one_line(capsys, argv, message):
    assert main(["plan", "tiny-llama", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sramflow: error: {message}") and err.count("\n") == 1


def test_pool_link_in_target_files(tmp_path, slow_link):
    assert load_target(slow_link).pool_link == LinkSpec(1e9, 10e-6)
    assert load_target("h100").pool_link == LinkSpec(400e9 / 8, 3e-6)  # one ConnectX-7 NDR port per GPU
    assert load_target("rubin").pool_link.bw_bytes_per_s == 2 * 800e9 / 8  # two ConnectX-9 NICs per GPU
    assert load_target("lpu").pool_link == LinkSpec(4 * 25.78125e9 / 8, 5 * 216 / 900e6)  # a C2C link, 5 hops
    from targets.overrides import dump_toml

    partial, full = tmp_path / "partial.toml", tmp_path / "x.toml"

    text = dump_toml(load_target("lpu-mini"))
    full.write_text(text.replace('[pool_link]\nbw_bytes_per_s = "12890625000.0 B/s"\n', "[pool_link]\n"))
    with pytest.raises(ConfigError, match=r"x.toml:\d+: pool_link: bw_bytes_per_s is missing"):
        load_target(str(full))
    without = text[: text.index("[pool_link]")]
    partial.write_text(without)
    assert load_target(str(partial)).pool_link == load_target("lpu-mini").global_link  # the default
