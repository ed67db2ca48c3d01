"""Golden sets: questions with the documents that answer them, one JSON object a line.

``{"question": "...", "expected": ["pydoc:break", ...], "answer_contains": ["..."], "kind": "howto"}``;
``"answerable": false`` (with ``expected`` empty) marks a question the documents cannot answer.
An expected entry names a document by its source or its title; any one of them counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from rag.sources import is_utf8

SHIPPED = Path(__file__).resolve().parent


class GoldenSetError(Exception):
    """A golden set that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class GoldenQuestion:
    question: str
    expected: tuple[str, ...] = ()
    answer_contains: tuple[str, ...] = ()
    kind: str = ""
    answerable: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_line(self) -> str:
        body: dict[str, Any] = {"question": self.question, "expected": list(self.expected)}
        if self.answer_contains:
            body["answer_contains"] = list(self.answer_contains)
        if self.kind:
            body["kind"] = self.kind
        if not self.answerable:
            body["answerable"] = False
        return json.dumps({**body, **self.extra}, ensure_ascii=False)


def shipped_sets() -> list[str]:
    return sorted(path.stem for path in SHIPPED.glob("*.jsonl"))


def resolve(name_or_path: str) -> Path:
    """A shipped set's name (``demo-heldout``) or a path to a JSONL file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = SHIPPED / f"{name_or_path}.jsonl"
    if "/" not in name_or_path and shipped.is_file():
        return shipped
    raise GoldenSetError(
        f"No golden set {name_or_path!r}: not a file, nor one of the shipped sets ({', '.join(shipped_sets())})."
    )


def _text_problem(text: str) -> str:
    """Why ``text`` cannot be asked or stored (Postgres takes no NUL, nor a lone surrogate), or ''."""
    if "\x00" in text:
        return "holds a NUL character"
    if not is_utf8(text):
        return "holds a lone surrogate (not text)"
    return ""


def _strings(value: Any, name: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GoldenSetError(f"{where}: {name!r} must be a list of non-empty strings.")
    for v in value:
        if problem := _text_problem(v):
            raise GoldenSetError(f"{where}: {name!r} {problem}.")
    return tuple(v.strip() for v in value)


def parse_line(line: str, where: str) -> GoldenQuestion:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise GoldenSetError(f"{where}: not JSON ({exc.msg}).") from None
    except RecursionError:
        raise GoldenSetError(f"{where}: not JSON (nested too deeply).") from None
    if not isinstance(row, dict):
        raise GoldenSetError(f"{where}: each line must be a JSON object.")
    question = row.pop("question", None)
    if not isinstance(question, str) or not question.strip():
        raise GoldenSetError(f"{where}: 'question' must be a non-empty string.")
    if problem := _text_problem(question):
        raise GoldenSetError(f"{where}: 'question' {problem}.")
    limit = settings.RAGSITE_MAX_QUESTION_CHARS
    if len(question.strip()) > limit:
        raise GoldenSetError(f"{where}: 'question' is longer than {limit} characters ({len(question.strip())}).")
    answerable = row.pop("answerable", True)
    if not isinstance(answerable, bool):
        raise GoldenSetError(f"{where}: 'answerable' must be true or false.")
    expected = _strings(row.pop("expected", []), "expected", where)
    if answerable and not expected:
        raise GoldenSetError(f"{where}: an answerable question needs 'expected' (a source or title).")
    kind = row.pop("kind", "")
    if not isinstance(kind, str):
        raise GoldenSetError(f"{where}: 'kind' must be a string.")
    if problem := _text_problem(kind):
        raise GoldenSetError(f"{where}: 'kind' {problem}.")
    return GoldenQuestion(
        question=question.strip(),
        expected=expected,
        answer_contains=_strings(row.pop("answer_contains", []), "answer_contains", where),
        kind=kind,
        answerable=answerable,
        extra=row,
    )


def load(name_or_path: str) -> tuple[str, list[GoldenQuestion]]:
    """The set's name (a shipped set's, or the file's stem) and its questions."""
    path = resolve(name_or_path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GoldenSetError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GoldenSetError(f"{path} is not UTF-8 text.") from None
    questions = [
        parse_line(line, f"{path.name} line {number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not questions:
        raise GoldenSetError(f"{path} holds no questions.")
    return path.stem, questions
