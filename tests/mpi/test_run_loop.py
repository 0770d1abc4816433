"""dlion.run's loop on the real hydra mpiexec, with shell commands as the "training" (cheap):
restarts and their bound, the doubling backoff, --min-np, a changed host list, stops, the CLI.
No rank starts MPI here; mpiexec itself is what is under test."""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from dlion.run import __main__ as cli
from dlion.run.hosts import DiscoveryError, Host
from dlion.run.job import Job, default_mpiexec, mpiexec_command
from dlion.run.supervisor import EXIT_GAVE_UP, Options, Supervisor

pytestmark = pytest.mark.mpi

ONE, TWO = (Host("localhost", 1, "A"),), (Host("localhost", 2, "A"),)


class Hosts:
    """A host source the test changes (``now``), or that fails (``error``)."""

    what = "test hosts"

    def __init__(self, now: tuple[Host, ...]) -> None:
        self.now, self.error = now, ""

    def hosts(self) -> tuple[Host, ...]:
        if self.error:
            raise DiscoveryError(self.error)
        return self.now


def supervise(source, script: str, **kw) -> tuple[int, list[str]]:
    lines: list[str] = []
    opts = dict(backoff_s=0.01, discover_every_s=0.1, poll_s=0.05, grace_s=2.0)
    opts.update(kw)
    options = Options(command=("sh", "-c", script), mpiexec=default_mpiexec(), **opts)
    sup = Supervisor(source, options, log=lines.append)
    return sup.run(), lines


def test_mpiexec_command_has_one_section_per_host_with_its_site():
    hosts = (Host("n1", 2, "A"), Host("n2", 1, "B"))
    cmd = mpiexec_command("mpiexec", hosts, ["python", "t.py"], ["-launcher", "ssh"])
    assert cmd == [
        "mpiexec", "-launcher", "ssh", "-hosts", "n1:2,n2:1",
        "-n", "2", "-env", "DLION_SITE", "A", "python", "t.py", ":",
        "-n", "1", "-env", "DLION_SITE", "B", "python", "t.py",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="argument ':' \\(argument 2\\)"):
        mpiexec_command("mpiexec", hosts, ["echo", ":"])
    with pytest.raises(ValueError, match="no hosts"):
        mpiexec_command("mpiexec", (), ["true"])


def test_every_rank_gets_its_site_and_success_ends_at_once(tmp_path):
    out = tmp_path / "sites"
    hosts = (Host("localhost", 2, "A"), Host("localhost", 1, "B"))
    rc, lines = supervise(Hosts(hosts), f'echo "$PMI_RANK $DLION_SITE" >> {out}')
    assert rc == 0
    assert sorted(out.read_text().split("\n")[:-1]) == ["0 A", "1 A", "2 B"]
    assert lines[0].startswith("dlion.run: started 3 ranks on localhost:2:A,localhost:1:B")
    assert "(sites A,A,B;" in lines[0]
    assert re.fullmatch(r"dlion\.run: the job ended rc=0 after [0-9.]+ s", lines[1])
    assert lines[2:] == ["dlion.run: the job finished (rc=0)"]


def test_failures_restart_with_a_doubling_capped_backoff_then_give_up_with_the_rc():
    start = time.monotonic()
    rc, lines = supervise(Hosts(ONE), "exit 5", max_restarts=3, backoff_s=0.1, backoff_max_s=0.2)
    assert rc == 5
    assert time.monotonic() - start >= 0.5  # 0.1 + 0.2 + 0.2
    assert sum("started 1 ranks" in line for line in lines) == 4
    waits = [line for line in lines if "restarting in" in line]
    assert [w.split(" (")[0] for w in waits] == [
        f"dlion.run: restarting in {s} s" for s in ("0.1", "0.2", "0.2")
    ]
    assert ["attempt 1 of 3" in waits[0], "attempt 3 of 3" in waits[2]] == [True, True]
    assert lines[-1] == (
        "dlion.run: gave up because the job failed (rc=5) and all 3 restarts "
        "(--max-restarts) are used; exit status 5"
    )


def test_too_few_slots_waits_then_gives_up_with_a_clear_message():
    rc, lines = supervise(Hosts(ONE), "true", min_np=2, wait_s=0.3)
    assert rc == EXIT_GAVE_UP
    assert lines[0].startswith("dlion.run: 1 slots (localhost:1:A), below --min-np 2: waiting")
    assert lines[-1] == (
        "dlion.run: gave up because test hosts gave 1 slots for 0.3 s (--wait), fewer than "
        "--min-np 2"
    )
    assert not any("started" in line for line in lines)


def test_hosts_that_arrive_while_waiting_start_the_job():
    source = Hosts(ONE)
    threading.Timer(0.3, lambda: setattr(source, "now", TWO)).start()
    rc, lines = supervise(source, "true", min_np=2, wait_s=10)
    assert rc == 0 and "started 2 ranks on localhost:2:A" in lines[1]


def test_a_changed_host_list_stops_the_job_and_restarts_on_the_new_hosts(tmp_path):
    source, flag = Hosts(ONE), tmp_path / "second"
    threading.Timer(0.5, lambda: setattr(source, "now", TWO)).start()
    # First job: waits forever (until stopped); the next one finds the flag and succeeds.
    script = f"[ -e {flag} ] && exit 0; touch {flag}; exec sleep 60"
    start = time.monotonic()
    rc, lines = supervise(source, script)
    assert rc == 0 and time.monotonic() - start < 20
    changed = [line for line in lines if "discovery changed" in line]
    assert changed == [
        "dlion.run: discovery changed from localhost:1:A to localhost:2:A: stopping the job "
        "(grace 2 s)"
    ]
    assert "attempt 1 of 3" in " ".join(lines)
    assert "started 2 ranks on localhost:2:A" in [x for x in lines if "started" in x][1]


@pytest.mark.parametrize(
    ("script", "ended", "rc"), [("sleep 1.5 & exit 0", True, 0), ("exec sleep 9", False, 15)]
)
def test_stopping_a_job_whose_ranks_have_ended_keeps_its_exit_status(script, ended, rc):
    # "sleep &" holds the rank's stdout: hydra is still tearing down after the rank exited 0.
    # A SIGTERM then would end the job with 255 and the supervisor would restart a finished job.
    job = Job(mpiexec_command(default_mpiexec(), TWO, ["sh", "-c", script]))
    time.sleep(0.5)
    assert job.poll() is None
    assert job.ranks_ended() is ended
    assert job.stop(5.0) == rc and job.seconds() < 5


def test_a_failing_discovery_is_logged_once_and_the_job_goes_on():
    source = Hosts(ONE)
    threading.Timer(0.2, lambda: setattr(source, "error", "the script broke")).start()
    rc, lines = supervise(source, "sleep 1")
    assert rc == 0
    assert lines.count("dlion.run: cannot read the hosts: the script broke") == 1
    assert not any("restarting" in line for line in lines)


def test_a_stop_request_ends_the_job_with_sigkill_after_the_grace():
    lines: list[str] = []
    options = Options(
        command=("sh", "-c", "trap '' TERM; sleep 60"),
        mpiexec=default_mpiexec(),
        grace_s=0.5,
        poll_s=0.05,
    )
    sup = Supervisor(Hosts(ONE), options, log=lines.append)
    threading.Timer(0.5, sup.request_stop, (signal.SIGTERM,)).start()
    start = time.monotonic()
    assert sup.run() == 128 + signal.SIGTERM
    assert time.monotonic() - start < 10
    assert "dlion.run: SIGTERM received: stopping the job (grace 0.5 s)" in lines
    assert any(re.search(r"the job ended rc=-9 \(SIGKILL\)", line) for line in lines), lines
    assert lines[-1] == "dlion.run: stopped by SIGTERM"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hosts", "h"], "give the command of every rank after --"),
        (["--hosts", "h", "--discover", "d", "--", "true"], "not allowed with argument"),
        (["--", "true"], "one of the arguments --hosts --discover is required"),
        (["--hosts", "h", "--mpiexec", "/nonexistent", "--", "true"], "not an executable"),
        (["--hosts", "h", "--max-restarts", "-1", "--", "true"], "max_restarts must be >= 0"),
        (["--hosts", "h", "--", "echo", ":"], "argument ':'"),
        (["--discover", " ", "--", "true"], "the discovery command is empty"),
        (["--hosts", "/nonexistent/hosts", "--", "true"], "cannot read it"),
        (["--discover", "echo a:0:A", "--", "true"], "line 1: slots must be an int > 0, got 0"),
        (["--discover", "exit 3", "--", "true"], "failed with exit status 3"),
    ],
)
def test_command_line_errors_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_runs_the_job(tmp_path, capsys):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("localhost:1:A\n")
    assert cli.main(["--hosts", str(hosts), "--", "sh", "-c", "exit 0"]) == 0
    assert "dlion.run: the job finished (rc=0)" in capsys.readouterr().err
