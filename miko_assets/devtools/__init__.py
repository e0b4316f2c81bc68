"""Rigs for tests, benchmarks and rehearsals: fake and stage-answering LLM servers on 127.0.0.1,
a real `dagster dev` driven over GraphQL, and the helpers of scale runs. Nothing in the
pipeline imports this package."""
