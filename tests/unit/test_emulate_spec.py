"""The DLION_EMULATE spec (dlion.emulate_spec): grammar, quoted site names, and the check of the
ranks and sites an item names against a topology."""

import pytest

from dlion import emulate
from dlion.emulate_spec import LinkCap, Slowdown, Spec, parse


def test_items_parse_into_links_speeds_and_slowdowns():
    s = parse("A-B:20mbit:40ms; #0-#1:1gbps compute=1,0.5 slow=1:3@200 *-*:inf")
    assert s.links == [
        ("A", "B", LinkCap(20e6 / 8, 0.04)),
        ("#0", "#1", LinkCap(1e9, 0.0)),
        ("*", "*", LinkCap(0.0, 0.0)),
    ]
    assert s.compute == [1.0, 0.5] and s.slowdowns == [Slowdown(1, 3.0, 200)]
    assert s.speed(1, 199) == 0.5 and s.speed(1, 200) == pytest.approx(0.5 / 3)
    assert s.speed(5, 0) == 1.0  # ranks not listed run at full speed


def test_dlion_emulate_reexports_the_spec():
    assert emulate.parse is parse and emulate.Spec is Spec and emulate.LinkCap is LinkCap
    assert emulate.parse_rate("8bit") == 1.0 and emulate.parse_time("250us") == 250e-6


@pytest.mark.parametrize(
    ("text", "a", "b"),
    [
        ("[eu-west]-B:20mbit", "eu-west", "B"),
        ("[eu-west]-[us-east-1]:20mbit:5ms", "eu-west", "us-east-1"),
        ("#3-[eu-west]:1gbit", "#3", "eu-west"),
        ("[A]-B:1mbit", "A", "B"),  # brackets may quote any name
        ("[zone:a]-*:1mbit", "zone:a", "*"),
    ],
)
def test_bracketed_site_names_may_hold_dashes_and_colons(text, a, b):
    (link,) = parse(text).links
    assert link[:2] == (a, b)


def test_a_bracketed_site_is_addressed_by_its_ranks():
    s = parse("[eu-west]-[us-east]:20mbit:40ms [eu-west]-[eu-west]:1gbit")
    sites = ["eu-west", "eu-west", "us-east"]
    assert s.link(0, 2, sites) == LinkCap(20e6 / 8, 0.04)
    assert s.link(2, 1, sites) == LinkCap(20e6 / 8, 0.04)
    assert s.link(0, 1, sites) == LinkCap(1e9 / 8, 0.0)
    s.check(sites)


def test_site_items_share_their_site_pair_and_rank_items_do_not():
    s = parse("A-B:20mbit *-*:1gbit #1-#3:5mbit #0-C:1mbit B-C:inf")
    sites = ["A", "A", "B", "B", "C"]
    assert s.shared(0, 2, sites) and s.shared(1, 2, sites) and s.shared(2, 0, sites)
    assert s.shared(0, 1, sites)  # inside a site: *-* is the site's one wire
    assert not s.shared(1, 3, sites) and not s.shared(3, 1, sites)  # #1-#3 is its own
    assert s.link(1, 3, sites) == LinkCap(5e6 / 8, 0.0)
    assert not s.shared(0, 4, sites) and s.shared(1, 4, sites)  # #0-C beats *-*
    assert not s.shared(2, 4, sites)  # B-C:inf: no wire to share
    assert not parse("").shared(0, 1, sites)


def test_each_link_is_paced_on_its_site_pairs_wire_or_its_own():
    from dlion.discovery import Topology
    from dlion.runtime import _caps

    sites = ("A", "A", "B", "C")
    top = Topology(rank=1, size=4, local_rank=1, local_size=4, sites=sites, hosts=("h",) * 4)
    caps = _caps(parse("A-B:20mbit:40ms #1-C:1mbit A-A:1gbit"), top)
    # Wire = from_site * 3 + to_site, sites numbered A 0, B 1, C 2; -1: a link of its own.
    assert caps == [(1e9 / 8, 0.0, 0), (0.0, 0.0, -1), (20e6 / 8, 0.04, 1), (1e6 / 8, 0.0, -1)]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("eu-west-B:20mbit", r"\[eu-west\]-B:20mbit"),  # the quoting rule, in the message
        ("A-B", "not of the form A-B:rate"),
        ("A-B:1mbit:1ms:2ms", "not of the form A-B:rate"),
        ("A-B:fast", "bad rate 'fast'"),
        ("A-B:1mbit:soon", "bad latency 'soon'"),
        ("#x-B:1mbit", "rank endpoint '#x'"),
        ("[*]-B:1mbit", "cannot be named"),
        ("[#1]-B:1mbit", "cannot be named"),
        ("[eu-west-B:1mbit", "not of the form"),
        ("compute=1,0", "speeds must be > 0"),
        ("slow=1:0@3", "factor > 0"),
    ],
)
def test_grammar_errors_name_the_item_and_the_grammar(text, expect):
    with pytest.raises(ValueError, match=expect) as err:
        parse(text)
    assert f"DLION_EMULATE item {text!r}" in str(err.value)
    assert "A-B:rate[:latency]" in str(err.value)


def test_parse_is_pure_and_check_names_missing_sites_and_ranks():
    sites = ["A", "A", "eu-west", "eu-west"]
    parse("A-C:1mbit #7-#0:1mbit slow=9:2 compute=1,1,1,1,1")  # grammar only: no error
    parse("*-*:1mbit #3-A:1mbit [eu-west]-A:1mbit compute=1,1,0.5 slow=3:2@5").check(sites)
    cases = [
        ("A-C:1mbit", "'A-C:...' names site C, which no rank has"),
        ("#7-#0:1mbit", "'#7-#0:...' names rank #7, which does not exist"),
        ("[us-east]-A:1mbit", r"'\[us-east\]-A:...' names site \[us-east\]"),
        ("slow=9:2@4", "'slow=9:2@4' names rank 9"),
        ("compute=1,1,1,1,1", "'compute=1,1,1,1,1' gives 5 speeds"),
    ]
    for text, expect in cases:
        with pytest.raises(ValueError, match=expect) as err:
            parse(text).check(sites)
        assert r"the sites are A, [eu-west] and the ranks #0..#3 (4 ranks)" in str(err.value)
