"""``python -m bench cache``, part 2: an exact hit, a semantic hit and a miss end to end, beside /health."""

from __future__ import annotations

import json
import statistics

from bench._stats import timed

E2E_TOPICS = ["yield", "return", "with", "global", "nonlocal", "import", "assert", "del", "pass", "raise", "break"]
E2E_TOPICS += ["continue", "try", "while", "for", "lambda", "if"]


def e2e_benchmark(pid: int, repeat: int) -> dict[str, float]:
    from django.test import Client

    from rag.ingestion import ingest_items
    from rag.models import ApiKey, Collection
    from rag.sources import demo_items
    from resilience import config
    from resilience.fake_ollama import FakeOllama

    name = f"bench-cache-{pid}-e2e"
    items = [item for item in demo_items() if item.source.removeprefix("pydoc:") in E2E_TOPICS]
    report = ingest_items(items, collection_name=name)
    if report.failures:
        raise SystemExit(f"ingest failed: {report.failures}")
    # Throttles stay on, at their defaults: the questions carry a key, as a client's would.
    key_row, key = ApiKey.issue(name="bench cache")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post(question: str) -> tuple[float, dict]:
        body = json.dumps({"question": question, "collection": name})
        ms, response = timed(lambda: client.post("/api/query", body, content_type="application/json"))
        assert response.status_code == 200, response.content
        return ms, response.json()

    with FakeOllama() as fake:
        fake.set_mode("slow", seconds=0.2, paths=["/api/chat"])
        base = config.current()
        provider = {"generation_backend": "ollama", "ollama_base_url": fake.url}
        config.override(config.replace(base, provider=provider))
        try:
            miss, semantic_new = [], []
            for topic in E2E_TOPICS:
                ms, body = post(f"What does the {topic} statement do?")
                if body["cache"] == "miss" and body["generator"] == "ollama":
                    miss.append(ms)
            for topic in E2E_TOPICS:
                for template in ("How does the {} statement work?", "What is the {} statement used for?"):
                    ms, body = post(template.format(topic))
                    if body["cache"] == "semantic":
                        semantic_new.append(ms)
            paraphrase = "How does the yield statement work?"
            assert post(paraphrase)[1]["cache"] == "semantic"
            for _ in range(10):  # warm-up
                health_status = client.get("/health").status_code
                client.get("/health/live")
                post("what does the yield STATEMENT do")
            # Interleaved, so that the load of other processes weighs on every kind alike.
            health, live, exact, repeated = [], [], [], []
            for i in range(repeat):
                health.append(timed(lambda: client.get("/health"))[0])
                live.append(timed(lambda: client.get("/health/live"))[0])
                exact.append(post(f"what does the {E2E_TOPICS[i % 3]} STATEMENT do")[0])
                ms, body = post(paraphrase)
                if body["cache"] == "semantic":
                    repeated.append(ms)
            chat_calls = fake.count("/api/chat")
        finally:
            config.override(base)
            key_row.revoke()
    Collection.objects.filter(name=name).delete()
    out = {
        "health_median_ms": statistics.median(health),
        "health_live_median_ms": statistics.median(live),
        "exact_hit_median_ms": statistics.median(exact),
        "semantic_hit_median_ms": statistics.median(repeated) if repeated else float("nan"),
        "semantic_new_phrasing_median_ms": statistics.median(semantic_new) if semantic_new else float("nan"),
        "miss_median_ms": statistics.median(miss) if miss else float("nan"),
    }
    h = out["health_median_ms"]
    note = "" if health_status == 200 else f"; it answered {health_status}: see its body"
    print(f"GET /health                          median {h:7.2f} ms   (n={len(health)}{note})")
    print(f"GET /health/live                     median {out['health_live_median_ms']:7.2f} ms")
    print(
        f"exact hit                            median {out['exact_hit_median_ms']:7.2f} ms   "
        f"{out['exact_hit_median_ms'] / h:.1f}x /health (n={len(exact)})"
    )
    print(
        f"semantic hit, phrasing seen before   median {out['semantic_hit_median_ms']:7.2f} ms   "
        f"{out['semantic_hit_median_ms'] / h:.1f}x /health (n={len(repeated)}; its vector is in the embedding cache)"
    )
    print(
        f"semantic hit, new phrasing           median {out['semantic_new_phrasing_median_ms']:7.2f} ms   "
        f"{out['semantic_new_phrasing_median_ms'] / h:.1f}x /health (n={len(semantic_new)}; pays one local embed)"
    )
    print(f"miss (chat answers in 200 ms)        median {out['miss_median_ms']:7.2f} ms   (n={len(miss)})")
    print(f"chat requests that reached the fake Ollama: {chat_calls} (one per miss)")
    return out
