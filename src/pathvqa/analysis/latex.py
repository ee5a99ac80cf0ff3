"""The report's tables for a paper: ``tables.tex``, one booktabs table per protocol, the best value of each
column in bold, each value ± half the width of its 95% interval (a run group's: ± its sd over seeds),
the dataset, split and number of questions in the caption. Needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

from typing import Any

SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def escape(text: Any) -> str:
    """Text as LaTeX prints it (its special characters escaped)."""
    return "".join(SPECIAL.get(char, char) for char in str(text))


def _spread(row: dict[str, Any], column: str) -> float | None:
    """What follows ±: a run group's sd over seeds, else half its 95% interval's width."""
    if row.get(f"{column}_sd") is not None:
        return row[f"{column}_sd"]
    ci = row.get(f"{column}_ci")
    return (ci[1] - ci[0]) / 2 if ci else None


def _cell(row: dict[str, Any], column: str, best: float | None) -> str:
    value = row.get(column)
    if not isinstance(value, float):
        return "--" if value is None else escape(value)
    text = f"{value:.3f}"
    if best is not None and abs(value - best) < 5e-4:
        text = rf"\textbf{{{text}}}"
    spread = _spread(row, column)
    return text + (rf" {{\scriptsize $\pm$ {spread:.3f}}}" if spread is not None else "")


def table(caption: str, label: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """One booktabs table: a row per model, the best (highest) value of each column in bold."""
    best = {}
    for column in columns:
        values = [r.get(column) for r in rows if isinstance(r.get(column), float)]
        best[column] = max(values) if len(values) > 1 else None
    head = " & ".join(["model", *(escape(c) for c in columns)])
    body = [" & ".join([escape(r["model"]), *(_cell(r, c, best[c]) for c in columns)]) + r" \\" for r in rows]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\begin{{tabular}}{{l{'r' * len(columns)}}}", r"\toprule", head + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}", "",
    ])  # fmt: skip


def document(title: str, tables: list[str]) -> str:
    """``tables.tex``: the tables, each ready to ``\\input`` or paste (a comment says what it needs)."""
    head = [f"% {title}: tables written by pathvqa report (needs \\usepackage{{booktabs}})", ""]
    return "\n".join([*head, *tables])


def balanced(text: str) -> list[str]:
    """What is wrong with the LaTeX's structure (every environment closed in order, braces paired): a
    check that needs no LaTeX installed."""
    import re

    problems, stack, depth = [], [], 0
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", text):
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            problems.append(f"\\end{{{name}}} closes nothing open")
    problems += [f"\\begin{{{name}}} never closed" for name in stack]
    for char in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            problems.append("a } with no {")
            depth = 0
    return problems + (["a { never closed"] if depth else [])
