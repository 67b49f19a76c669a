"""Prometheus metrics of the gateway (HTTP metrics come from shared.observability)."""

from prometheus_client import Counter, Gauge

ACTIVE_GENERATIONS = Gauge("chat_active_generations", "Answers this gateway is generating now")
TOKENS = Counter("chat_streamed_tokens_total", "Text chunks relayed from the upstream (about one token each)")
UPSTREAM_ERRORS = Counter("chat_upstream_errors_total", "Upstream errors by kind", ["kind"])
RETRIES = Counter("chat_upstream_retries_total", "Upstream attempts retried (start or continuation)")
RESUMES = Counter("chat_resumes_total", "Answers resumed on request")
RECOVERED = Counter("chat_recovered_answers_total", "Orphaned answers taken over by crash recovery")
