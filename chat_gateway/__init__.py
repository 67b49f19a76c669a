"""The chat gateway: streams answers from an OpenAI-compatible server and records them durably."""
