"""The chaos run: many chats through two gateways while processes are killed, paused and restarted; then every
answer is checked against what the model wrote and what its client saw. `make chaos`; results in
docs/reliability.md."""
