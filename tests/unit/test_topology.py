"""benchmarks/topology.py: one topology string renders both emulation modes consistently."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import topology  # noqa: E402

import dlion.emulate_spec as spec  # noqa: E402


def test_one_topology_drives_both_modes():
    t = topology.parse("A:2,B:1 A-B:20mbit:40ms compute=1,1,0.5 cpu=B:0.5 slow=2:3@100")
    assert t.size == 3 and t.site_of_rank() == ["A", "A", "B"]
    assert t.microcloud_up() == [
        "--sites", "A:2,B:1", "--link", "A-B:20mbit:40ms", "--cpu", "B:0.5",
    ]  # fmt: skip
    # In-process: the quota becomes compute speed; on the testbed it is a real quota.
    inproc = spec.parse(t.emulate_inprocess())
    assert inproc.compute == [1.0, 1.0, 0.25]
    assert inproc.link(0, 2, t.site_of_rank()).bandwidth_Bps == 20e6 / 8
    assert inproc.link(0, 2, t.site_of_rank()).latency_s == pytest.approx(0.04)
    real = spec.parse(t.emulate_realnet())
    assert real.compute == [1.0, 1.0, 0.5] and not real.links
    assert [s.rank for s in real.slowdowns] == [2]
    assert topology.parse(t.describe()).describe() == t.describe()


@pytest.mark.parametrize(
    "bad",
    ["", "A:0", "A:2,A:1", "A:2,B:2 A-C:20mbit:1ms", "A:2 compute=1", "A:1,B:1 cpu=C:0.5",
     "A:1,B:1 A-B:fast:1ms"],
)  # fmt: skip
def test_bad_topologies_are_refused_naming_the_item(bad):
    with pytest.raises(ValueError, match="topology"):
        topology.parse(bad)


def test_on_sites_keeps_each_present_rank_its_speed_and_drops_absent_sites():
    t = topology.parse("A:2,B:2 A-B:20mbit:40ms compute=1,1,0.5,0.5 cpu=B:0.5 slow=2:3@10")
    alone = t.on_sites(["A", "A"])
    assert alone.describe() == "A:2 compute=1,1" and alone.emulate_inprocess() == ""
    assert t.on_sites(["A", "A", "B", "B"]).describe() == t.describe().replace(" slow=2:3@10", "")
    part = t.on_sites(["A", "B"])  # one rank of each: B's first rank, quota and link
    assert part.describe() == "A:1,B:1 A-B:20mbit:40ms compute=1,0.5 cpu=B:0.5"
    spec.parse(part.emulate_inprocess()).check(["A", "B"])
    with pytest.raises(ValueError, match="site 'C' is not in"):
        t.on_sites(["A", "C"])
    with pytest.raises(ValueError, match="has 2 ranks, not 3"):
        t.on_sites(["B", "B", "B"])
    with pytest.raises(ValueError, match="not contiguous"):
        t.on_sites(["A", "B", "A"])
