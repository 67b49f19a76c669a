"""The test kit the tests, the benchmarks and the chaos run share: a fake OpenAI-compatible upstream, service
processes on free ports, throwaway databases. Not shipped: the wheel holds the services only."""
