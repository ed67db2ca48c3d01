"""The one answer pipeline. A plain and a streamed answer take the same steps:

0. who asks (a ``Caller``) and of which collections: one name, several, or every collection the
   caller may read (``["*"]``); a collection the caller may not read is one that does not exist
   (rag.visibility), at every step below;
1. the first statement (rag.first_look): the throttle counted, the collections resolved among
   those the caller may read, the exact cache lookup, the question's cached embedding and the
   query log id, in one round trip: no other query on an exact hit;
2. the question's embedding (from that statement, else the model's); without it, full-text
   retrieval only;
3. semantic cache lookup;
4. single flight: identical misses in flight at once (any thread or worker) wait for the first
   and then take its answer from the cache: one model call, not N;
5. retrieval, then generation: extractive, or Ollama's chat, plain or streamed;
6. stale-if-error: when generation fails, a cached answer past its TTL (but within the stale
   window) is served, marked stale; else the extractive answer;
7. the answer stored in the cache (never a degraded one), and the question logged and counted
   (in the next batch, rag.bookkeeping).

Admission: once the cache is full, an anonymous caller's answer is cached only when the question
has been asked before (the query log knows), so one caller asking many new questions cannot push
everyone's answers out of the bounded cache. Key holders' and signed-in users' answers, and any
answer while there is room, are cached at once.

Everything that can refuse the question (an unknown or unreadable collection) happens before the
first event, so a caller can still answer with a plain error. A generation that fails mid-stream
ends with an ``error`` event: the tokens already sent cannot be taken back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from rag import answer_cache, query_log, visibility
from rag.cache_counters import count
from rag.declining import covers
from rag.embedding_cache import caching, embed_question
from rag.embeddings import get_embedder
from rag.first_look import first_look
from rag.generation import extractive_answer, invalid_citations, ollama_answer, ollama_stream
from rag.models import CacheOutcome
from rag.results import NO_MATCH, NOT_COVERED, Answer, error_event, pieces, token_event
from rag.retrieval import RetrievedChunk, hybrid_search
from rag.throttling import Ticket
from resilience import config
from resilience.errors import OllamaError

__all__ = ["Answer", "answer_question", "stream_answer"]


def answer_question(
    *,
    question: str,
    caller: visibility.Caller,
    collection_name: str = "default",
    collections: Sequence[str] | None = None,
    k: int = 5,
    use_cache: bool = True,
    log_query: bool = True,
    trusted: bool = True,
    embedding_cache: bool = True,
    throttle: Ticket | None = None,
) -> Answer:
    """Answer from the cache, or retrieve the best passages and answer from them.

    ``caller`` is who asks; ``collections`` (names, or ``["*"]`` for all the caller may read)
    replaces ``collection_name`` when given. Raises CollectionNotFound for a collection that does
    not exist or that the caller may not read. Degrades instead of failing when Ollama does.
    ``use_cache=False`` neither reads nor writes the answer cache. ``log_query=False`` keeps the
    question out of the query log and the hit/miss counters (cache warming, evaluation).
    ``embedding_cache=False`` has the model embed the question even when it was asked before
    (evaluation: the time a new question takes). ``throttle`` is counted in the question's first
    statement: rag.throttling.Refused when the caller is over its budget.
    """
    run = _Run(
        question,
        caller,
        list(collections or [collection_name]),
        k,
        use_cache=use_cache,
        log_query=log_query,
        trusted=trusted,
        embedding_cache=embedding_cache,
        throttle=throttle,
    )
    for _ in run.events(stream=False):
        pass
    assert run.answer is not None
    return run.answer


def stream_answer(
    *,
    question: str,
    caller: visibility.Caller,
    collection_name: str = "default",
    collections: Sequence[str] | None = None,
    k: int = 5,
    use_cache: bool = True,
    trusted: bool = True,
    throttle: Ticket | None = None,
) -> Iterator[dict[str, Any]]:
    """The answer as events: ``meta`` (sources, flags), ``token``s, then ``done`` or ``error``.

    With the Ollama backend the tokens are passed on as Ollama streams them; a cached or extractive
    answer is sent in word-sized pieces. The arguments are ``answer_question``'s.
    """
    names = list(collections or [collection_name])
    run = _Run(question, caller, names, k, use_cache=use_cache, log_query=True, trusted=trusted, throttle=throttle)
    run.prepare()  # refuses a throttled caller or an unreadable collection now, before the response starts
    return run.events(stream=True)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class _Run:
    """One question on its way through the pipeline."""

    def __init__(
        self,
        question: str,
        caller: visibility.Caller,
        names: list[str],
        k: int,
        *,
        use_cache: bool,
        log_query: bool,
        trusted: bool,
        embedding_cache: bool = True,
        throttle: Ticket | None = None,
    ) -> None:
        self.question = question
        self.throttle = throttle
        self.query_id: int | None = None
        self.trusted = trusted
        self.caller = caller
        self.names = names
        self.collections: visibility.CollectionSet | None = None
        self.k = k
        self.use_cache = use_cache
        self.log_query = log_query
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.reasons: list[str] = []
        self.answer: Answer | None = None
        self.scope: answer_cache.Scope | None = None
        self.vector: np.ndarray | None = None
        self.hit_collection_ids: tuple[int, ...] = ()
        self.prepared = False
        self.embedding_cache = embedding_cache

    # -- steps 1 to 3: what the caches and the embedder can say before any work ------------------

    def prepare(self) -> None:
        if self.prepared:
            return
        self.prepared = True
        self.embedder = caching(get_embedder()) if self.embedding_cache else get_embedder()
        caching_on = self.use_cache and config.current().cache.enabled
        with self._timed("cache"):
            look = first_look(
                caller=self.caller,
                names=self.names,
                question=self.question,
                embedding_model=self.embedder.name,
                k=self.k,
                throttle=self.throttle,
                exact=caching_on,
                embedding=self.embedding_cache,
                log=self.log_query,
            )
        self.query_id = look.query_id
        if look.hit:
            self.answer = self._from_hit(look.hit)
            return
        self.collections = visibility.collection_set(self.names, look.found)
        if caching_on:
            self.scope = answer_cache.Scope.for_query(self.collections, embedding_model=self.embedder.name, k=self.k)
        self.vector = look.embedding if look.embedding is not None else self._embed()
        if self.scope is not None and self.vector is not None:
            with self._timed("cache"):
                hit = answer_cache.lookup_semantic(self.scope, self.question, self.vector)
            if hit:
                self.answer = self._from_hit(hit)
                return
            answer_cache.ensure_answer_index(self.embedder.name, int(self.vector.shape[0]))

    def _embed(self) -> np.ndarray | None:
        with self._timed("embed"):
            try:
                # The first statement found no cached vector: the model's, stored for the next time
                # the question is asked of these collections.
                return embed_question(self.embedder, self.question, self.collections.ids)
            except OllamaError as exc:
                self.reasons.append(f"embeddings unavailable: {exc.reason}")
                return None

    # -- steps 4 to 7 ------------------------------------------------------------------------------

    def events(self, *, stream: bool) -> Iterator[dict[str, Any]]:
        self.prepare()
        if self.answer is not None:  # a cache hit
            yield from self._deliver()
            return
        flight = answer_cache.single_flight(self.scope, self.question) if self.scope else nullcontext(False)
        waited = time.perf_counter()
        with flight as locked:
            self.timings["single_flight"] = _ms(time.perf_counter() - waited)
            if locked:  # another request may have answered it while this one waited
                hit = answer_cache.lookup_exact(self.scope, self.question)
                if hit:
                    self.answer = self._from_hit(hit)
                    yield from self._deliver()
                    return
            self.answer = self._retrieve()
            yield from self._generate(stream)

    def _retrieve(self) -> Answer:
        assert self.collections is not None
        with self._timed("retrieve"):
            sources = hybrid_search(
                self.collections,
                self.question,
                self.k,
                model_name=self.embedder.name,
                query_vector=self.vector,
                timings=self.timings,
                reasons=self.reasons,
            )
        return Answer(
            question=self.question,
            answer="",
            sources=sources,
            collection=self.collections.label,
            collections=self.collections.sorted_names,
            cache=CacheOutcome.MISS if self.scope is not None else CacheOutcome.BYPASS,
            degraded=bool(self.reasons),
            degraded_reason="; ".join(self.reasons) or None,
            timings_ms=self.timings,
        )

    def _generate(self, stream: bool) -> Iterator[dict[str, Any]]:
        answer = self.answer
        assert answer is not None
        if not answer.sources:
            answer.answer = NO_MATCH
            answer.answerable = False
            yield from self._deliver()
            return
        assert self.collections is not None
        with self._timed("decline"):
            covered = covers(
                answer.sources,
                collections=self.collections,
                question=self.question,
                model_name=self.embedder.name,
                query_vector=self.vector,
            )
        if not covered:
            answer.answer = NOT_COVERED
            answer.answerable = False
            self._store()
            yield from self._deliver()
            return
        if config.current().provider.generation_backend != "ollama":
            with self._timed("generate"):
                answer.answer = extractive_answer(self.question, answer.sources)
            self._store()
            yield from self._deliver()
            return
        if not stream:
            try:
                with self._timed("generate"):
                    answer.answer = ollama_answer(self.question, answer.sources)
            except OllamaError as exc:
                yield from self._fall_back(exc)
                return
            answer.generator = "ollama"
            answer.invalid_citations = invalid_citations(answer.answer, len(answer.sources))
            self._store()
            yield from self._deliver()
            return
        yield from self._generate_stream(answer)

    def _generate_stream(self, answer: Answer) -> Iterator[dict[str, Any]]:
        started = time.perf_counter()
        tokens = ollama_stream(self.question, answer.sources)
        try:
            # The first piece decides: a generation that fails before it falls back unseen.
            first = next(tokens, "")
        except OllamaError as exc:
            self.timings["generate"] = _ms(time.perf_counter() - started)
            yield from self._fall_back(exc)
            return
        answer.generator = "ollama"
        yield answer.meta_event()
        received = [first]
        if first:
            yield token_event(first)
        try:
            for piece in tokens:
                received.append(piece)
                yield token_event(piece)
        except OllamaError as exc:
            reason = f"generation unavailable: {exc.reason}"
            answer.answer = "".join(received)
            answer.degrade(reason)
            self.timings["generate"] = _ms(time.perf_counter() - started)
            self._finish()
            yield error_event("generation_failed", reason)
            return
        answer.answer = "".join(received).strip()
        answer.invalid_citations = invalid_citations(answer.answer, len(answer.sources))
        self.timings["generate"] = _ms(time.perf_counter() - started)
        self._store()
        self._finish()
        yield answer.done_event()

    def _fall_back(self, exc: OllamaError) -> Iterator[dict[str, Any]]:
        """Generation failed before its first word: a stale cached answer, else an extractive one."""
        answer = self.answer
        assert answer is not None
        answer.degrade(f"generation unavailable: {exc.reason}")
        hit = answer_cache.lookup_stale(self.scope, self.question, self.vector) if self.scope else None
        if hit:
            cached = self._from_hit(hit)
            if hit.stale:  # else another worker has just stored a fresh answer
                count(stale_served=1)
                cached.degraded = True
                cached.degraded_reason = f"{answer.degraded_reason}; serving a stale cached answer"
            self.answer = cached
        else:
            with self._timed("generate"):
                answer.answer = extractive_answer(self.question, answer.sources)
            answer.generator = "extractive"
        yield from self._deliver()

    def _store(self) -> None:
        answer = self.answer
        if self.scope is None or self.vector is None or answer is None or answer.degraded:
            return
        assert self.collections is not None
        with self._timed("store"):
            full = not self.trusted and answer_cache.is_full()
            if full and not query_log.asked_before(self.collections.ids, self.question):
                count(unadmitted=1)
                return
            sources = [chunk.as_source() for chunk in answer.sources]
            answer_cache.store(self.scope, self.question, self.vector, answer.answer, sources, answer.generator)

    # -- delivery ----------------------------------------------------------------------------------

    def _deliver(self) -> Iterator[dict[str, Any]]:
        """A finished answer: logged, then sent as meta, word-sized tokens and done."""
        answer = self._finish()
        yield answer.meta_event()
        for piece in pieces(answer.answer):
            yield token_event(piece)
        yield answer.done_event()

    def _finish(self) -> Answer:
        answer = self.answer
        assert answer is not None
        answer.timings_ms["total"] = _ms(time.perf_counter() - self.started)
        if self.log_query:
            answer.query_id = query_log.record(
                question=answer.question,
                collection=answer.collection,
                collection_ids=self.collections.ids if self.collections else self.hit_collection_ids,
                cache=answer.cache,
                total_ms=answer.timings_ms["total"],
                degraded=answer.degraded,
                matched_question=answer.matched_question,
                answerable=answer.answerable,
                query_id=self.query_id,
            )
        return answer

    def _from_hit(self, hit: answer_cache.Hit) -> Answer:
        if self.collections is not None:
            names = self.collections.sorted_names
        else:  # an exact hit by name: the lookup resolved the names
            names, self.hit_collection_ids = list(hit.collections), hit.collection_ids
        return Answer(
            question=self.question,
            answer=hit.answer,
            sources=[RetrievedChunk.from_source(s) for s in hit.sources],
            collection=",".join(names),
            collections=names,
            cache=hit.kind,
            timings_ms=self.timings,
            generator=hit.generator,
            stale=hit.stale,
            matched_question=hit.question if hit.kind == CacheOutcome.SEMANTIC else None,
            similarity=hit.similarity,
            answerable=hit.answer not in (NOT_COVERED, NO_MATCH),
            invalid_citations=invalid_citations(hit.answer, len(hit.sources)) if hit.generator == "ollama" else [],
        )

    def _timed(self, step: str) -> _Timer:
        return _Timer(self.timings, step)


class _Timer:
    """Adds the time spent in a ``with`` block to ``timings[step]`` (in ms)."""

    def __init__(self, timings: dict[str, float], step: str) -> None:
        self.timings = timings
        self.step = step

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.step] = round(self.timings.get(self.step, 0.0) + _ms(time.perf_counter() - self.started), 2)
