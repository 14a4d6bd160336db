"""Errors about dataset files, and the fail-or-skip policy that long jobs use.

Every problem names where it is (file, video, expression, frame) and what to do about it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from glus.errors import GlusError


class DataError(GlusError, ValueError):
    """A problem in a dataset: names the file, the video, the expression and the fix."""

    def __init__(self, problem: str, *, file=None, video=None, expression=None, frame=None, fix=None):
        self.problem, self.file, self.video = problem, file, video
        self.expression, self.frame, self.fix = expression, frame, fix
        super().__init__(self.describe())

    def where(self) -> str:
        parts = [f"{k} {v}" for k, v in (("file", self.file), ("video", self.video),
                                          ("expression", self.expression), ("frame", self.frame)) if v is not None]
        return ", ".join(parts)

    def describe(self) -> str:
        text = f"{self.where()}: {self.problem}" if self.where() else self.problem
        return f"{text}. Fix: {self.fix}" if self.fix else text


@dataclass
class ProblemLog:
    """Fail on the first bad item (policy "fail") or record it and go on (policy "skip").

    With "skip" nothing is dropped silently: `summary()` counts and lists what was skipped.
    """

    policy: str = "fail"
    problems: list[DataError] = field(default_factory=list)

    def __post_init__(self):
        if self.policy not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {self.policy!r}")

    def report(self, err: DataError) -> None:
        if self.policy == "fail":
            raise err
        self.problems.append(err)

    def __len__(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        if not self.problems:
            return "no problems"
        kinds = Counter(p.problem.split(":")[0] for p in self.problems)
        lines = [f"{len(self.problems)} problem(s) skipped:"]
        lines += [f"  {n} x {kind}" for kind, n in kinds.most_common()]
        return "\n".join(lines)
