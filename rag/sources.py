"""Where documents to ingest come from: files and folders, the demo corpus, files read again.

Each yields ``SourceItem``s (a document's source, bytes and media type) or, for what cannot be
read, a failed ``FileResult`` with its reason; rag.ingestion chunks, embeds and stores them.
"""

from __future__ import annotations

import dataclasses
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


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, Path] | tuple[Path, str]]:
    """(root, file) for the files under the given paths (recursively), or (path, reason) for a path
    that is unusable. A folder given is the root of the files found in it; a file's root is its folder.
    """
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            root = path.resolve()
            for child in sorted(p for p in root.rglob("*") if p.is_file()):
                relative = child.relative_to(root)
                if child.suffix.lower() in MEDIA_TYPES and not any(part.startswith(".") for part in relative.parts):
                    yield root, child
        elif path.is_file():
            yield path.resolve().parent, path.resolve()
        else:
            yield (path, "no such file or directory")


def file_items(paths: Iterable[str | Path]) -> Iterator[SourceItem | FileResult]:
    """Files as documents: each named by its path relative to the folder it was found in."""
    for root, entry in iter_files(paths):
        if isinstance(entry, str):
            yield FileResult(source=str(root), status=FileStatus.FAILED, reason=entry)
            continue
        source = entry.relative_to(root).as_posix()
        try:
            media_type = media_type_for(entry)
            data = entry.read_bytes()
        except ReadError as exc:
            yield FileResult(source=str(entry), status=FileStatus.FAILED, reason=str(exc))
            continue
        except OSError as exc:
            yield FileResult(source=str(entry), status=FileStatus.FAILED, reason=f"cannot read: {exc.strerror or exc}")
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
