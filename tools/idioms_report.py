"""The transformers idioms table: runs tests/test_transformers_idioms.py and prints each idiom, its
status and whether its test passed, as the Markdown table MIGRATION.md holds.

    python -m tools.idioms_report            # run the idioms, print the table
    python -m tools.idioms_report --no-run   # the table of idioms and statuses only
"""

from __future__ import annotations

import argparse
import sys

import pytest

MODULE = "tests/test_transformers_idioms.py"
STATUS = {
    "same": "same result as transformers",
    "ours only": "works here; fails in transformers 4.57.6",
    "clear error": "not applicable: a clear error",
}


class _Outcomes:
    """A pytest plugin that records each idiom's outcome."""

    def __init__(self):
        self.results: dict[str, str] = {}

    def pytest_runtest_logreport(self, report):
        if "test_idiom[" not in report.nodeid:
            return
        idiom = report.nodeid.split("test_idiom[", 1)[1].rstrip("]")
        if report.when == "call" or report.outcome != "passed":
            self.results[idiom] = report.outcome


def table(idioms, results: dict[str, str] | None) -> str:
    header = "| idiom | backend | what you write | status |" + (" test |" if results is not None else "")
    rule = "|---|---|---|---|" + ("---|" if results is not None else "")
    rows = [header, rule]
    for item in idioms:
        text = item.text.replace("|", "\\|")
        row = f"| `{item.id}` | {item.backend} | `{text}` | {STATUS[item.status]} |"
        if results is not None:
            row += f" {results.get(item.id, 'not run')} |"
        rows.append(row)
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="print the table without running the tests")
    args = parser.parse_args(argv)
    from tests.test_transformers_idioms import IDIOMS

    results = None
    if not args.no_run:
        outcomes = _Outcomes()
        pytest.main([MODULE, "-q", "-p", "no:cacheprovider", "-k", "test_idiom"], plugins=[outcomes])
        results = outcomes.results
    print(table(IDIOMS, results))
    counts = {status: sum(i.status == status for i in IDIOMS) for status in STATUS}
    print(f"\n{len(IDIOMS)} idioms: " + ", ".join(f"{n} {STATUS[s]}" for s, n in counts.items()))
    if results is not None:
        failed = [name for name, outcome in results.items() if outcome != "passed"]
        print(
            f"tests: {len(results) - len(failed)} passed, {len(failed)} not passed {failed if failed else ''}"
        )
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
