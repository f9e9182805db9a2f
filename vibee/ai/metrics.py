"""The AI service's Prometheus metrics (DESIGN 6.4). Labels: provider, outcome, kind."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

AI_REQUESTS = Counter(
    "vibee_ai_requests",
    "AI requests per provider and outcome (ok, retryable, permanent, open, timeout).",
    ["provider", "outcome"],
)
AI_DURATION = Histogram(
    "vibee_ai_request_duration_seconds",
    "Time one provider took to answer (successful attempts).",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
AI_TOKENS = Counter(
    "vibee_ai_tokens",
    "Tokens per provider, configured model and kind (prompt, completion).",
    ["provider", "model", "kind"],
)
AI_COST = Counter("vibee_ai_cost_dollars", "Cost reported by providers, in dollars.", ["provider"])
AI_CACHE_HITS = Counter("vibee_ai_cache_hits", "Answers served from the response cache.")
AI_REFUSALS = Counter(
    "vibee_ai_refusals", "Requests answered with no reply, by reason.", ["reason"]
)
