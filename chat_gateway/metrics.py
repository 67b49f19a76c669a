"""Prometheus metrics of the gateway (HTTP metrics come from shared.observability)."""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_GENERATIONS = Gauge("chat_active_generations", "Answers this gateway is generating now")
TOKENS = Counter("chat_streamed_tokens_total", "Text chunks relayed from the upstream (about one token each)")
UPSTREAM_ERRORS = Counter("chat_upstream_errors_total", "Upstream errors by kind", ["kind"])
RETRIES = Counter("chat_upstream_retries_total", "Upstream attempts retried (start or continuation)")
RESUMES = Counter("chat_resumes_total", "Answers resumed on request")
RECOVERED = Counter("chat_recovered_answers_total", "Orphaned answers taken over by crash recovery")
# Per upstream (chat_gateway/upstreams/): counted when a stream is opened or fails, never per chunk.
UPSTREAM_STATE = Gauge("chat_upstream_breaker_open", "1 while an upstream's circuit breaker skips it", ["upstream"])
UPSTREAM_REQUESTS = Counter("chat_upstream_requests_total", "Streams asked of an upstream", ["upstream", "outcome"])
UPSTREAM_LATENCY = Histogram(
    "chat_upstream_open_seconds", "Time for an upstream to answer a stream's request with its headers", ["upstream"]
)
UPSTREAM_IN_USE = Gauge("chat_upstream_streams", "Streams open to an upstream now", ["upstream"])
FALLBACKS = Counter("chat_upstream_fallbacks_total", "Chats moved to their next upstream before the first word")
