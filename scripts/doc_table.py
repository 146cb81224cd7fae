"""A table in one of our markdown pages that a script writes from the code, between markers.

scripts/config_reference.py and scripts/access_reference.py each render one; this module
rewrites it in place (`--update FILE`) or prints it, and the unit suite compares the page with
the rendering, so that the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def update(path: Path, start: str, end: str, table: str) -> None:
    """Replace what lies between the start and end markers of path (both included) with table."""
    text = path.read_text()
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(before + table + after)


def main(description: str, render: Callable[[], str], start: str, end: str) -> None:
    """The command line of a table script: print the table, or --update FILE with it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--update", type=Path, help="rewrite the table in this markdown file")
    args = parser.parse_args()
    if args.update:
        update(args.update, start, end, render())
    else:
        print(render())
