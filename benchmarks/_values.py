"""Values the benchmarks cache: shapes an agent really stores, built deterministically."""

from __future__ import annotations

from typing import Any

# ~1 KB as msgpack: a tool result with a short summary and twelve small records (many small
# objects: the costly shape to decode, hence to copy).
ONE_KB: dict[str, Any] = {
    "tool": "search_receipts",
    "args": {"query": "receipts over $100", "top_k": 5},
    "summary": ("Twelve receipts over $100 in Q4, mostly food and travel; " * 6)[:300],
    "results": [
        {"id": i, "title": f"receipt {i:04d}", "amount": 100.5 + i, "tags": ["food", "q4"]}
        for i in range(12)
    ],
}

# ~100 KB: retrieved documents, mostly text.
HUNDRED_KB: dict[str, Any] = {
    "query": "quarterly expense policy",
    "documents": [
        {
            "id": f"doc-{i:03d}",
            "score": 1.0 / (i + 1),
            "text": (
                f"Section {i}: " + "Expenses above the limit need a manager's approval. " * 19
            )[:1000],
        }
        for i in range(96)
    ],
}

# A text embedding as OpenAI's text-embedding-3-small returns it: 1536 floats.
EMBEDDING: list[float] = [((i * 7919) % 2000 - 1000) / 1000.0 for i in range(1536)]

SHAPES: dict[str, Any] = {"1 KB": ONE_KB, "100 KB": HUNDRED_KB, "embedding 1536 floats": EMBEDDING}
