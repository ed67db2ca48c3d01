"""From fused candidates to the sources an answer cites: diverse documents, neighbours merged.

A long document has many chunks that match a question about its subject; left alone they take
every place and push out the one short document that answers it. So a document takes at most
``max_per_document`` of the k places, and a chunk next to a chosen one (the same document, the
ordinal before or after) joins it as one source instead of taking a place of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Candidate:
    """A chunk found by the first stage, with what the later stages need to judge it."""

    chunk_id: int
    document_id: int
    ordinal: int
    title: str
    source: str
    text: str
    score: float  # the fused first-stage score, then the reranked one
    similarity: float | None = None  # cosine similarity of the chunk to the question
    heading: str = ""
    merged: list[int] = field(default_factory=list)  # chunk ids merged into this source, in order


def join_texts(first: str, second: str) -> str:
    """Two consecutive chunks as one text: the second starts with the end of the first (the
    chunker's overlap), which is not repeated."""
    head, sep, rest = second.partition("\n\n")
    if sep and first.endswith(head):
        return f"{first}\n\n{rest}"
    return f"{first}\n\n{second}"


def diversify(candidates: list[Candidate], k: int, *, max_per_document: int) -> list[Candidate]:
    """The best ``k`` candidates, at most ``max_per_document`` a document, neighbours merged.

    ``candidates`` are best first. A chunk adjacent to one already chosen is merged into it
    (once on each side) and takes no place.
    """
    by_position = {(c.document_id, c.ordinal): c for c in candidates}
    chosen: list[Candidate] = []
    taken: dict[int, int] = {}
    used: set[int] = set()
    for candidate in candidates:
        if len(chosen) >= k:
            break
        if candidate.chunk_id in used or taken.get(candidate.document_id, 0) >= max_per_document:
            continue
        taken[candidate.document_id] = taken.get(candidate.document_id, 0) + 1
        used.add(candidate.chunk_id)
        source = Candidate(**{**candidate.__dict__, "merged": [candidate.chunk_id]})
        before = by_position.get((candidate.document_id, candidate.ordinal - 1))
        if before is not None and before.chunk_id not in used:
            used.add(before.chunk_id)
            source.text = join_texts(before.text, source.text)
            source.merged.insert(0, before.chunk_id)
        after = by_position.get((candidate.document_id, candidate.ordinal + 1))
        if after is not None and after.chunk_id not in used:
            used.add(after.chunk_id)
            source.text = join_texts(source.text, after.text)
            source.merged.append(after.chunk_id)
        chosen.append(source)
    return chosen
