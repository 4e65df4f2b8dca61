"""Collectives along a stage's mesh: one link per peer on a direct node, the aggregate local bandwidth
through a switch (a GPU node's NVSwitch), as plans cost them."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.partition.cost import group_mesh
from compiler.partition.mesh import collective_s
from targets import load_target

H100 = load_target("h100")


@settings(max_examples=40, deadline=None)
@given(group=st.integers(2, 8), nbytes=st.integers(1, 1 << 26))
def test_a_switched_node_all_reduces_at_its_aggregate_bandwidth(group, nbytes):
    link = H100.local_link
    aggregate = H100.local_links_per_chip * link.bw_bytes_per_s
    # reduce-scatter and all-gather: each sends its (group - 1) slices of nbytes / group through the switch
    expected = 2 * (link.latency_s + (group - 1) * (nbytes / group) / aggregate)
    assert abs(collective_s("allreduce", nbytes, group_mesh(group, H100), H100) - expected) <= 1e-12 * expected


@settings(max_examples=40, deadline=None)
@given(group=st.integers(2, 8), nbytes=st.integers(1, 1 << 26))
def test_a_switch_is_never_slower_than_one_link_per_peer(group, nbytes):
    direct = dataclasses.replace(H100, local_fabric="direct")
    switched = collective_s("allreduce", nbytes, group_mesh(group, H100), H100)
    assert switched <= collective_s("allreduce", nbytes, group_mesh(group, direct), direct)


def test_the_lpu_keeps_one_link_per_peer():
    lpu = load_target("lpu")
    link = lpu.local_link
    # 2 chips: each sends its half over the one link between them, twice
    expected = 2 * (link.latency_s + 2**21 / link.bw_bytes_per_s)
    assert abs(collective_s("allreduce", 2**22, group_mesh(2, lpu), lpu) - expected) <= 1e-12 * expected


def test_a_target_file_says_its_node_is_switched(tmp_path, capsys):
    path = tmp_path / "h100-direct.toml"
    path.write_text('base = "h100"\nlocal_fabric = "direct"\n')

    def link_us(target: str) -> float:
        assert main(["plan", "llama-3.1-8b", "--target", target, "--chips", "2", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["decode"]["breakdown_us"]["links"]

    assert link_us("h100") < link_us(str(path))
