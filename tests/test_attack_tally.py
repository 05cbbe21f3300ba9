"""The attack tally counts what it is told: a passing attack case survives, a failing one is lost, a
skipped one is skipped, generated inputs add their counts, and an unknown kind stops the collection."""

from __future__ import annotations

import json

pytest_plugins = ["pytester"]

INNER_CONFTEST = """
import sys
sys.path.insert(0, {root!r})
from tests.conftest import (  # the project's own hooks, in a suite of its own
    pytest_collection_modifyitems, pytest_configure, pytest_runtest_makereport, pytest_terminal_summary)
"""


def test_the_tally_counts_survived_lost_skipped_and_generated_cases(pytester):
    from tests.conftest import ROOT

    pytester.makeconftest(INNER_CONFTEST.format(root=str(ROOT)))
    pytester.makepyfile(
        test_inner="""
import pytest
from tests import attack_tally

@pytest.mark.attack("full disk")
@pytest.mark.parametrize("n", [1, 2, 3])
def test_survives(n):
    assert n

@pytest.mark.attack("full disk")
def test_loses():
    assert False, "a row was lost"

@pytest.mark.attack("PostgreSQL")
def test_cannot_try():
    pytest.skip("no server here")

@pytest.mark.attack("fuzzed configs")
def test_generated():
    attack_tally.cases("fuzzed configs", 10, 9)

def test_not_an_attack():
    pass
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    result.stdout.re_match_lines(
        [r"full disk +4 +3 +1 +0", r"PostgreSQL +1 +0 +0 +1", r"fuzzed configs +1 +1 +0 +0 +9/10"]
    )
    rows = {r["kind"]: r for r in json.loads((pytester.path / "artifacts" / "attack_tally.json").read_text())["kinds"]}
    assert set(rows) == {"full disk", "PostgreSQL", "fuzzed configs"}
    assert (rows["full disk"]["survived"], rows["full disk"]["lost"]) == (3, 1)


def test_an_unknown_kind_stops_the_collection(pytester):
    from tests.conftest import ROOT

    pytester.makeconftest(INNER_CONFTEST.format(root=str(ROOT)))
    pytester.makepyfile(test_inner='import pytest\n@pytest.mark.attack("cosmic rays")\ndef test_x():\n    pass\n')
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown attack kind 'cosmic rays'*"])
