"""GaiaExchange and AkoExchange: selection rules against numpy, what is kept, nothing lost."""

import pytest
from conftest import run_mpi

pytestmark = pytest.mark.mpi


def _check_books(rec: dict) -> None:
    assert rec["max_residual_error"] < 1e-5, rec  # the engine kept what the rule says
    assert rec["lost"] < 1e-4 * rec["scale"], rec  # received + residuals == sent gradients
    assert rec["residual_nonzero"] > 0, rec  # the filter really held entries back


def test_gaia_is_dense_inside_a_site_and_filters_across_sites():
    res = run_mpi("baselines", 4, "gaia", env={"DLION_TEST_SITES": "A,A,B,B"}, timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        _check_books(rec)
        assert rec["intra_dense"], rec
        # Across sites only the significant entries travel: some, but far from all.
        fractions = rec["cross_fraction"]
        assert len(fractions) == 2 * 7
        assert 0.01 < min(fractions) and max(fractions) < 0.9, fractions
        assert rec["describe"].startswith("gaia(threshold=0.25, lr=0.5")


def test_ako_sends_partition_step_mod_p_carrying_its_last_p_gradients():
    res = run_mpi("baselines", 3, "ako", timeout=180)
    assert res.returncode == 0, res.explain()
    for rec in res.records():
        _check_books(rec)
        assert rec["ako_sum_error"] < 1e-4, rec
