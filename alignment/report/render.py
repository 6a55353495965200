"""The comparison table and report in Markdown, self-contained HTML and a rich terminal table."""

from __future__ import annotations

import base64
import html
from typing import Any

from alignment.report.compare import MetricRow


def fmt(value: float | None) -> str:
    """Compact number: one decimal from 10 up, three significant digits below.

    >>> fmt(57.123), fmt(0.01234), fmt(None)
    ('57.1', '0.0123', '–')
    """
    if value is None:
        return "–"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def goal_text(row: MetricRow) -> str:
    if isinstance(row.goal, str):
        return "↑ higher" if row.goal == "max" else "↓ lower"
    return f"→ {fmt(row.goal)}"


def fmt_p(p: float | None) -> str:
    """A p-value in three digits, ``<0.001`` below that.

    >>> fmt_p(0.04321), fmt_p(0.0002), fmt_p(1.0), fmt_p(None)
    ('0.0432', '<0.001', '1', '–')
    """
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def cell_text(row: MetricRow, stage: str, base: str = "base") -> tuple[str, str]:
    """``("55.0 [53.0, 57.0] Δ−5.0*", tone)``; ``*`` marks a change significant after Holm's correction.

    ``tone`` is ``better``/``worse`` for significant deltas (toward/away from the goal), else ``""``.
    """
    cell = row.cells.get(stage)
    if cell is None:
        return "–", ""
    text = fmt(cell.value)
    if cell.ci_low is not None:
        text += f" [{fmt(cell.ci_low)}, {fmt(cell.ci_high)}]"
    d = row.deltas.get(stage)
    if stage == base or d is None:
        return text, ""
    tone = ("better" if d.improvement > 0 else "worse") if d.significant else ""
    return f"{text} Δ{d.value:+.3g}{'*' if d.significant else ''}", tone


def markdown_table(rows: list[MetricRow], stages: list[str]) -> str:
    header = "| metric | kind | goal | " + " | ".join(stages) + " |"
    lines = [header, "|" + "---|" * (3 + len(stages))]
    for row in rows:
        cells = [cell_text(row, s)[0] for s in stages]
        lines.append(f"| {row.key} | {row.kind} | {goal_text(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def changes_table(rows: list[MetricRow], stages: list[str]) -> str:
    """Every stage's change from base: Δ, its 95% CI, raw and Holm-adjusted p, the test and paired items."""
    lines = [
        "| stage | metric | Δ | 95% CI of Δ | p | Holm p | test | items |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage in stages:
        for row in rows:
            d = row.deltas.get(stage)
            if d is None:
                continue
            ci = "–" if d.ci_low is None else f"[{d.ci_low:+.3g}, {d.ci_high:+.3g}]"
            test = d.test + (f", {d.discordant[0]}→0 / {d.discordant[1]}→1" if d.discordant else "")
            lines.append(
                f"| {stage} | {row.key} | {d.value:+.3g}{'*' if d.significant else ''} | {ci} | "
                f"{fmt_p(d.p)} | {fmt_p(d.p_holm)} | {test.replace('|', '/')} | {d.n or '–'} |"
            )
    return "\n".join(lines)


STATISTICS_NOTE = (
    "Each cell: value [95% CI]; Δ = change from base, `*` when significant at 5% after Holm's correction "
    "across the stage's bias measures (retention measures are a second family). Base and stage are scored "
    "on the same items with the same seed, so each change is paired item by item: an exact McNemar test "
    "for a proportion of yes/no outcomes (CrowS-Pairs decisions, correct answers), a paired bootstrap "
    "otherwise (StereoSet resamples whole target terms); the changes table names each change's test, and "
    "`independent CIs` (with the reason) marks one that could not be paired. Bias rows first, then "
    "retention rows."
)


def rich_table(rows: list[MetricRow], stages: list[str], title: str):
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "kind", "goal", *stages):
        table.add_column(column, overflow="fold")
    colours = {"better": "green", "worse": "red", "": ""}
    for row in rows:
        cells = []
        for stage in stages:
            text, tone = cell_text(row, stage)
            cells.append(f"[{colours[tone]}]{text}[/]" if tone else text)
        table.add_row(row.key, row.kind, goal_text(row), *cells)
    return table


def _kv_table(pairs: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in pairs]
    return "\n".join(lines)


def markdown_report(report: dict[str, Any], images: dict[str, str]) -> str:
    """The report as Markdown; ``images`` maps figure name to a relative PNG path."""
    stages = report["stages"]
    rows = report["_rows"]
    parts = [f"# safealign report: {report['name']}", ""]
    parts.append(
        f"Model `{report['provenance'].get('model')}`, stages {' → '.join(stages)}, preset "
        f"`{report.get('preset')}`, seed {report.get('seed')}, generated {report['created_at']}."
    )
    parts += ["", "## Verdicts", ""]
    parts += [f"- **{stage}**: {v['text']}" for stage, v in report["verdicts"].items()]
    parts += ["", "## Results", "", STATISTICS_NOTE, ""]
    parts.append(markdown_table(rows, stages))
    parts += ["", "### Changes from base", "", "p: raw; 1→0 / 0→1: items whose outcome flipped.", ""]
    parts.append(changes_table(rows, stages))
    for name, title in FIGURES:
        if name in images:
            parts += ["", f"### {title}", "", f"![{title}]({images[name]})"]
    parts += ["", "## Training", "", training_table(report["training"])]
    parts += ["", "## Provenance", "", "Shortened; `metrics.json` has every value.", ""]
    parts += [_kv_table(provenance_pairs(report["provenance"]))]
    return "\n".join(parts) + "\n"


FIGURES = (
    ("tradeoff", "Bias vs retention"),
    ("crows_pairs_by_type", "CrowS-Pairs pct_stereotype by bias type"),
    ("stereoset_by_domain", "StereoSet SS by domain"),
    ("training_curves", "Training curves"),
)


def reward_change_text(change: dict[str, Any]) -> str:
    """An RL stage's paired held-out reward change (``metrics.eval_reward_change``) in one phrase.

    >>> reward_change_text({"n": 46, "base_mean": 0.856, "trained_mean": 0.909, "change": 0.053,
    ...     "ci95": [-0.002, 0.106], "p": 0.066, "change_in_base_sd": 0.31})
    'held-out reward 0.856→0.909 (Δ+0.053 [-0.002, +0.106], p 0.066, +0.31 base sd, n 46 prompts)'
    """
    low, high = change.get("ci95") or (None, None)
    ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    in_sd = change.get("change_in_base_sd")
    sd = f", {in_sd:+.2f} base sd" if in_sd is not None else ""
    return (
        f"held-out reward {fmt(change['base_mean'])}→{fmt(change['trained_mean'])} "
        f"(Δ{change['change']:+.3f}{ci}, p {fmt_p(change.get('p'))}{sd}, n {change['n']} prompts)"
    )


def training_table(training: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| stage | status | steps | wall time (s) | peak RSS (MiB) | final metrics |",
        "|---|---|---|---|---|---|",
    ]
    for stage, info in training.items():
        values = info.get("metrics") or {}
        metrics = ", ".join(f"{k}={fmt(v)}" for k, v in values.items() if isinstance(v, (int, float)))
        change = values.get("eval_reward_change")
        if isinstance(change, dict) and {"n", "base_mean", "trained_mean", "change"} <= change.keys():
            metrics = ", ".join(filter(None, [reward_change_text(change), metrics]))
        lines.append(
            f"| {stage} | {info.get('status', '–')} | {info.get('steps', '–')} | "
            f"{fmt(info.get('wall_time_s'))} | {fmt(info.get('peak_rss_mb'))} | {metrics or '–'} |"
        )
    return "\n".join(lines)


def brief(value: Any, depth: int = 0, items: int = 6) -> str:
    """Nested provenance in one line: below the top level at most ``items`` entries and three levels deep;
    sha256 hex digests cut to 12 characters.

    >>> brief({"hash": "ab" * 32, "metrics": {"f1": 0.51234, "by": {"x": {"n": 1}}}, "tags": list(range(9))})
    'hash: abababababab; metrics: {f1: 0.5123, by: {x: {…}}}; tags: [0, 1, 2, 3, 4, 5, … 9 in all]'
    """
    if isinstance(value, dict):
        if depth >= 3:
            return "{…}"
        limit = items if depth else len(value)
        shown = [f"{k}: {brief(v, depth + 1, items)}" for k, v in list(value.items())[:limit]]
        if len(value) > limit:
            shown.append(f"… {len(value)} in all")
        return "; ".join(shown) if depth == 0 else "{" + ", ".join(shown) + "}"
    if isinstance(value, (list, tuple)):
        shown = [brief(v, depth + 1, items) for v in value[:items]]
        return "[" + ", ".join(shown + ([f"… {len(value)} in all"] if len(value) > items else [])) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def provenance_pairs(provenance: dict[str, Any]) -> list[tuple[str, Any]]:
    """Provenance as table rows, each value shortened (``metrics.json`` keeps everything)."""
    return [(key, brief(value).replace("|", "\\|")) for key, value in provenance.items()]


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.better{background:#e3f6e3}.worse{background:#fbe1e1}img{max-width:100%}
code{background:#f3f3f3;padding:1px 4px}
"""


def html_report(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """A self-contained HTML page: the same content with figures embedded as data URIs."""
    stages = report["stages"]
    rows = report["_rows"]
    esc = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>safealign report: {esc(report['name'])}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>safealign report: {esc(report['name'])}</h1>",
    ]
    out.append(
        f"<p>Model <code>{esc(str(report['provenance'].get('model')))}</code>, stages "
        f"{esc(' → '.join(stages))}, preset <code>{esc(str(report.get('preset')))}</code>, seed "
        f"{esc(str(report.get('seed')))}, generated {esc(report['created_at'])}.</p><h2>Verdicts</h2><ul>"
    )
    out += [f"<li><b>{esc(s)}</b>: {esc(v['text'])}</li>" for s, v in report["verdicts"].items()]
    out.append(
        f"</ul><h2>Results</h2><p>{esc(STATISTICS_NOTE.replace('`', ''))} Green = significantly closer to "
        "the goal, red = significantly further.</p><table><tr><th>metric</th><th>kind</th><th>goal</th>"
    )
    out += [f"<th>{esc(s)}</th>" for s in stages]
    out.append("</tr>")
    for row in rows:
        out.append(f"<tr><td>{esc(row.key)}</td><td>{row.kind}</td><td>{esc(goal_text(row))}</td>")
        for stage in stages:
            text, tone = cell_text(row, stage)
            out.append(f"<td class='{tone}'>{esc(text)}</td>")
        out.append("</tr>")
    out.append("</table><h3>Changes from base</h3>" + _md_table_to_html(changes_table(rows, stages)))
    for name, title in FIGURES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode("ascii")
            out.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{data}'>")
    out.append("<h2>Training</h2>" + _md_table_to_html(training_table(report["training"])))
    out.append("<h2>Provenance</h2><table>")
    out += [
        f"<tr><th>{esc(k)}</th><td>{esc(v.replace(chr(92) + '|', '|'))}</td></tr>"
        for k, v in provenance_pairs(report["provenance"])
    ]
    out.append("</table></body></html>")
    return "\n".join(out)


def _md_table_to_html(table: str) -> str:
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body]
    return "<table>" + "".join(rows) + "</table>"
