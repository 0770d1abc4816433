"""dlion.run.hosts: host:slots:site lists (round trips, errors naming the line), discovery."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlion.run.hosts import (
    DiscoveryCommand,
    DiscoveryError,
    Host,
    HostsError,
    HostsFile,
    describe,
    format_hosts,
    parse_hosts,
    same_hosts,
    total_slots,
)

_alnum = "abcXYZ019"
_name = st.builds(str.__add__, st.sampled_from(_alnum), st.text(_alnum + "._-", max_size=12))
_site = st.text(_alnum + "._-", min_size=1, max_size=8)
_host = st.builds(Host, _name, st.integers(1, 10**6), _site)
_hosts = st.lists(_host, max_size=8, unique_by=lambda h: (h.name, h.site))


@settings(max_examples=60, deadline=None)
@given(_hosts)
def test_format_then_parse_is_the_identity(hosts):
    assert parse_hosts(format_hosts(hosts)) == tuple(hosts)


@settings(max_examples=40, deadline=None)
@given(_hosts, st.data())
def test_comments_blank_lines_and_spaces_are_ignored(hosts, data):
    lines = []
    for h in hosts:
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(["", "   ", "# a comment", "  # x:1:y"])))
        pad = data.draw(st.sampled_from(["", " ", "\t"]))
        tail = data.draw(st.sampled_from(["", "  # note", "#"]))
        lines.append(f"{pad}{h.name} : {h.slots}:{h.site}{pad}{tail}")
    assert parse_hosts("\n".join(lines)) == tuple(hosts)


def test_one_machine_may_serve_several_sites():
    hosts = parse_hosts("localhost:2:A\nlocalhost:2:B\n")
    assert [h.site for h in hosts] == ["A", "B"] and total_slots(hosts) == 4
    assert describe(hosts) == "localhost:2:A,localhost:2:B" and describe(()) == "(none)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a:1:A\nb:2\n", r"hosts\.txt line 2: 'b:2' is not 'host:slots:site' \(2 fields\)"),
        ("a:1:A\n\n# c\nb:0:B\n", r"hosts\.txt line 4: slots must be an int > 0, got 0"),
        ("a:-3:A", r"line 1: slots must be an int > 0, got -3"),
        ("a:two:A", r"line 1: slots must be an int > 0, got 'two'"),
        ("a:1.5:A", r"line 1: slots must be an int > 0, got '1.5'"),
        ("a:1:A:x", r"line 1: .* \(4 fields\)"),
        ("fe80::1:2:A", r"line 1: .*fields"),
        (":1:A", r"line 1: bad host name ''"),
        ("-a:1:A", r"line 1: bad host name '-a'"),
        ("a b:1:A", r"line 1: bad host name 'a b'"),
        ("a:1:", r"line 1: bad site ''"),
        ("a:1:A,B", r"line 1: bad site 'A,B'"),
        ("a:1:A\nb:1:A\na:3:A\n", r"line 3: host 'a' of site 'A' is already on line 1"),
    ],
)
def test_bad_lines_are_named_by_number(text, message):
    with pytest.raises(HostsError, match=message):
        parse_hosts(text, "hosts.txt")


def test_same_hosts_ignores_the_order_only():
    a = parse_hosts("x:1:A\ny:2:B\n")
    assert same_hosts(a, tuple(reversed(a)))
    assert not same_hosts(a, parse_hosts("x:1:A\ny:1:B\n"))
    assert not same_hosts(a, parse_hosts("x:1:A\ny:2:C\n"))


def test_hosts_file_is_read_afresh(tmp_path):
    path = tmp_path / "hosts.txt"
    source = HostsFile(path)
    with pytest.raises(HostsError, match=r"hosts file .*hosts\.txt: cannot read it"):
        source.hosts()
    path.write_text("a:1:A\n")
    assert source.hosts() == (Host("a", 1, "A"),)
    path.write_text("a:2:A\nb:x:B\n")
    with pytest.raises(HostsError, match=r"hosts\.txt line 2: slots"):
        source.hosts()


def test_discovery_command_output_is_parsed(tmp_path):
    assert DiscoveryCommand("printf 'a:2:A\\n# x\\nb:1:B\\n'").hosts() == (
        Host("a", 2, "A"),
        Host("b", 1, "B"),
    )
    assert DiscoveryCommand("true").hosts() == ()


def test_failing_discovery_names_the_command_and_status():
    cmd = DiscoveryCommand("echo no hosts here >&2; exit 4")
    with pytest.raises(DiscoveryError, match=r"discovery command .* failed with exit status 4"):
        cmd.hosts()
    with pytest.raises(DiscoveryError, match="no hosts here"):
        cmd.hosts()
    with pytest.raises(DiscoveryError, match=r"output of discovery command .* line 1: slots"):
        DiscoveryCommand("echo a:0:A").hosts()
    with pytest.raises(DiscoveryError, match="empty"):
        DiscoveryCommand("  ")
    with pytest.raises(DiscoveryError, match="timeout must be > 0"):
        DiscoveryCommand("true", timeout_s=0)


def test_discovery_that_hangs_times_out_and_is_killed(tmp_path):
    marker = tmp_path / "still-running"
    cmd = DiscoveryCommand(f"sleep 0.1 && sleep 1 && touch {marker}", timeout_s=0.4)
    start = time.monotonic()
    with pytest.raises(
        DiscoveryError, match=r"did not finish within 0\.4 s \(--discover-timeout\)"
    ):
        cmd.hosts()
    assert time.monotonic() - start < 1
    time.sleep(1.2)  # the whole command (its process group) was killed, not only the shell
    assert not marker.exists()
