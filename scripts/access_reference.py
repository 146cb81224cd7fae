"""Print the table of docs/security.md saying who may call each RPC, from the access rules.

Every RPC of our protos (its `(llmproxy.access.v1.access)` option, read through
`llmproxy.common.access.rule_for`, which the interceptor of every service enforces) and every
service of other projects' protos we serve, as one markdown table; `--update FILE` rewrites the
table between FILE's reference markers. The unit suite compares the page with this output, so
the page cannot drift from the rules.

    .venv/bin/python scripts/access_reference.py --update docs/security.md
"""

from __future__ import annotations

import doc_table  # scripts/doc_table.py, beside this script

from llmproxy.common.access import OTHER_SERVICES, Rule, our_rpcs, path_of, rule_for

START = "<!-- access-reference:start (scripts/access_reference.py writes this table) -->"
END = "<!-- access-reference:end -->"


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
    for method in our_rpcs():
        name = f"{method.containing_service.name}/{method.name}"
        rows.append(_row(name, rule_for(path_of(method))))
    for service in OTHER_SERVICES:
        rows.append(_row(f"{service}/*", rule_for(f"/{service}/Any")))
    return "\n".join([START, *header, *rows, END])


if __name__ == "__main__":
    doc_table.main(__doc__.splitlines()[0], render, START, END)
