"""Domain errors of the core state; the edges (CLI, API, import) turn them into clear messages."""

from __future__ import annotations

from dataclasses import dataclass


class RecoupError(Exception):
    """Base of every error Recoup reports to a user as one clear line."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file; `row` is the 1-based data row (the header is not counted)."""

    file: str
    message: str
    row: int | None = None
    column: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
            if self.line is not None:
                where += f" (line {self.line})"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


class ContractError(RecoupError):
    """Input does not follow the data contract; nothing was written."""

    def __init__(self, problems: list[Problem], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        head = str(problems[0])
        rest = len(problems) - 1 + more
        super().__init__(head if rest == 0 else f"{head} (and {rest} more problem{'s' * (rest > 1)})")

    def details(self) -> str:
        lines = [str(p) for p in self.problems]
        if self.more:
            lines.append(f"... and {self.more} more")
        return "\n".join(lines)
