"""Where documents to ingest come from: files and folders, the demo corpus, files read again.

Each yields ``SourceItem``s (a document's source, bytes and media type) or, for what cannot be
read, a failed ``FileResult`` with its reason; rag.ingestion chunks, embeds and stores them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from django.conf import settings

from rag.models import Document
from rag.readers import MEDIA_TYPES, ReadError, media_type_for


@dataclass(frozen=True)
class SourceItem:
    """One document to ingest: where it came from and its raw bytes."""

    source: str
    data: bytes
    media_type: str
    fallback_title: str
    # The folder a file was read from (never shown; ``source`` is the path relative to it). Empty
    # for documents that are not files (the API's, the demo's): nothing ever reads them again.
    root: str = ""
    # A title given with the document (the API's ``title``): the document's title instead of the
    # one read from its text, written in the same transaction as its text.
    title: str = ""


class FileStatus(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass
class FileResult:
    source: str
    status: FileStatus
    chunks: int = 0
    reason: str = ""
    document_id: int | None = None
    # Failed for now (embeddings unavailable): the same document may well go through later.
    retryable: bool = False


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 shown as U+FFFD: safe to print and store."""
    if is_utf8(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def is_utf8(text: str) -> bool:
    """Whether ``text`` is real text (a file name's undecodable bytes arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unusable(exc: OSError, what: str = "") -> str:
    reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc)).lower()
    return f"{what}{reason}"


def _walk(root: Path) -> list[tuple[Path, Path] | tuple[Path, str]]:
    """The supported files under ``root`` (hidden ones and hidden folders left out), in path order,
    with the folders and files that could not be looked at and why."""
    found: list[tuple[Path, Path] | tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        found.append((Path(exc.filename or root), _unusable(exc, "cannot read folder: ")))

    # Unlike Path.rglob, os.walk tells us about a folder it cannot list instead of skipping it.
    for folder, folders, names in os.walk(root, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            child = Path(folder) / name
            if name.startswith(".") or child.suffix.lower() not in MEDIA_TYPES:
                continue
            try:
                if child.is_file():
                    found.append((root, child))
            except OSError as exc:
                found.append((child, _unusable(exc, "cannot read: ")))
    return sorted(found, key=lambda pair: pair[1] if isinstance(pair[1], Path) else pair[0])


def _kind(raw: str | Path) -> str:
    """ "dir" or "file" for a path given on the command line, or why it is neither."""
    if not str(raw).strip():  # Path("") is the current folder: never what was meant
        return "empty path"
    path = Path(raw).expanduser()
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        return "not a file or folder" if path.exists() else "no such file or directory"
    except OSError as exc:
        return _unusable(exc, "cannot read: ")


def path_problem(raw: str | Path) -> str | None:
    """Why a path given on the command line cannot be ingested at all, or None (its files may
    still fail one by one)."""
    kind = _kind(raw)
    if kind == "dir":
        return None if os.access(Path(raw).expanduser(), os.R_OK | os.X_OK) else "cannot read folder: permission denied"
    if kind == "file":
        return None if os.access(Path(raw).expanduser(), os.R_OK) else "cannot read: permission denied"
    return kind


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, Path] | tuple[Path, str]]:
    """(root, file) for the files under the given paths (recursively), or (path, reason) for a path
    that is unusable. A folder given is the root of the files found in it; a file's root is its folder.
    """
    for raw in paths:
        path = Path(raw).expanduser()
        kind = _kind(raw)
        try:
            if kind == "dir":
                yield from _walk(path.resolve())
            elif kind == "file":
                yield path.resolve().parent, path.resolve()
            else:
                yield (path, kind)
        except OSError as exc:
            yield (path, _unusable(exc, "cannot read: "))


def file_items(paths: Iterable[str | Path]) -> Iterator[SourceItem | FileResult]:
    """Files as documents: each named by its path relative to the folder it was found in."""
    for root, entry in iter_files(paths):
        if isinstance(entry, str):
            yield FileResult(source=printable(str(root)), status=FileStatus.FAILED, reason=entry)
            continue
        source = entry.relative_to(root).as_posix()
        if not (is_utf8(source) and is_utf8(str(root))):
            # Such a name cannot be stored, shown or looked up as text: fail the file, not the run.
            what = "file" if not is_utf8(source) else "folder"
            yield FileResult(printable(str(entry)), FileStatus.FAILED, reason=f"{what} name is not UTF-8")
            continue
        try:
            media_type = media_type_for(entry)
            data = entry.read_bytes()
        except ReadError as exc:
            yield FileResult(source=str(entry), status=FileStatus.FAILED, reason=str(exc))
            continue
        except OSError as exc:
            yield FileResult(source=str(entry), status=FileStatus.FAILED, reason=_unusable(exc, "cannot read: "))
            continue
        yield SourceItem(source=source, data=data, media_type=media_type, fallback_title=entry.stem, root=str(root))


def within_document_roots(path: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies in a folder of RAGSITE_DOCUMENT_ROOTS."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in settings.RAGSITE_DOCUMENT_ROOTS)


def reingest_items(documents: Iterable[Document]) -> Iterator[SourceItem | FileResult]:
    """File-backed documents read again from their files, only inside RAGSITE_DOCUMENT_ROOTS.

    Documents that are not files (the API's) are never read from disk, whatever their source says.
    """
    for document in documents:
        if not document.file_root:
            continue
        path = Path(document.file_root) / document.source
        if not (within_document_roots(Path(document.file_root)) and within_document_roots(path)):
            yield FileResult(document.source, FileStatus.FAILED, reason="its folder is not in RAGSITE_DOCUMENT_ROOTS")
            continue
        for entry in file_items([path]):
            if isinstance(entry, SourceItem):  # named as it was first ingested
                entry = dataclasses.replace(entry, source=document.source, root=document.file_root)
            yield entry


def demo_items() -> Iterator[SourceItem]:
    """The Python Language Reference topics that every CPython ships (no download)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield SourceItem(
            source=f"pydoc:{key}",
            data=topics[key].encode("utf-8"),
            media_type="text/plain",
            fallback_title=key,
        )
