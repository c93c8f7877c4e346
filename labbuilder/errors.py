"""User-facing errors: one readable line each, located in the lab file when possible."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a lab file, printed as `file:line:col: message (hint)`."""

    message: str
    file: str = ""
    line: int = 0
    col: int = 0
    hint: str = ""
    warning: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.col}"
        text = f"{where}: " if where else ""
        text += ("warning: " if self.warning else "") + self.message
        return text + (f" ({self.hint})" if self.hint else "")


class LabError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""

    def __init__(self, message: str, hint: str = "", problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems = problems or []

    def __str__(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")


class SpecError(LabError):
    """The lab file is invalid; `problems` holds every located error."""

    def __init__(self, problems: list[Problem]):
        errors = [p for p in problems if not p.warning]
        super().__init__(f"{len(errors)} problem(s) in the lab file", problems=problems)
