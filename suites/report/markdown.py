"""Rendering a report document to Markdown, figures referenced as files under figures/."""

from __future__ import annotations

from suites.report.document import Code, Figure, Section, Table, Text, cell_text


def _table(table: Table) -> list[str]:
    frame = table.frame
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(cell_text(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return [
        f"*Table ({table.name}): {table.caption}* [CSV](tables/{table.name}.csv)",
        "",
        head,
        rule,
        *body,
        "",
    ]


def render_markdown(title: str, sections: list[Section]) -> str:
    """The whole report as Markdown text."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Code):
                lines += ["```", block.text.rstrip("\n"), "```", ""]
            elif isinstance(block, Table):
                lines += _table(block)
            elif isinstance(block, Figure):
                lines += [
                    f"![{block.name}](figures/{block.name}.png)",
                    "",
                    f"*Figure ({block.name}): {block.caption}*",
                    "",
                ]
    return "\n".join(lines)
