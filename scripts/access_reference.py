"""Print the table of docs/security.md saying who may call each RPC, from the access rules.

Every RPC of our protos (its `(llmproxy.access.v1.access)` option, read through
`llmproxy.common.access.rule_for`, which the interceptor of every service enforces) and every
service of other projects' protos we serve, as one markdown table; `--update FILE` rewrites the
table between FILE's reference markers. The unit suite compares the page with this output, so
the page cannot drift from the rules.

    .venv/bin/python scripts/access_reference.py --update docs/security.md
"""

from __future__ import annotations

import argparse
import pkgutil
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import llmproxy._gen
from llmproxy.common.access import OTHER_SERVICES, Rule, rule_for

START = "<!-- access-reference:start (scripts/access_reference.py writes this table) -->"
END = "<!-- access-reference:end -->"


def our_methods() -> Iterator[str]:
    """`/package.Service/Method` of every RPC of every proto under proto/llmproxy, in order."""
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(llmproxy._gen.__path__, "llmproxy._gen.")
        if m.name.endswith("_pb2")
    )
    for name in modules:
        for service in import_module(name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}"


def _who(rule: Rule | None) -> tuple[str, str, str]:
    """The role, service-token and audited cells of one rule."""
    if rule is None:
        return "nobody (no rule)", "", ""
    if rule.open:
        return "open", "", ""
    role = rule.role.label if rule.role is not None else "no person"
    return role, "yes" if rule.service else "", "yes" if rule.mutating else ""


def _row(name: str, rule: Rule | None) -> str:
    role, service, audited = _who(rule)
    return f"| `{name}` | {role} | {service} | {audited} |"


def render() -> str:
    """The reference table, markers included."""
    header = [
        "| RPC | least role | service token | audited |",
        "|---|---|---|---|",
    ]
    rows = []
    for method in our_methods():
        service, _, name = method.lstrip("/").rpartition("/")
        rows.append(_row(f"{service.rpartition('.')[2]}/{name}", rule_for(method)))
    for service in OTHER_SERVICES:
        rows.append(_row(f"{service}/*", rule_for(f"/{service}/Any")))
    return "\n".join([START, *header, *rows, END])


def update(path: Path) -> None:
    """Replace the table between the markers of path with render()."""
    text = path.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    path.write_text(before + render() + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, help="rewrite the table in this markdown file")
    args = parser.parse_args()
    if args.update:
        update(args.update)
    else:
        print(render())


if __name__ == "__main__":
    main()
