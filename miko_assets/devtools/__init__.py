"""Rigs for tests, benchmarks and rehearsals: fake and stage-answering LLM servers on 127.0.0.1,
a real `dagster dev` (or a Postgres/Celery cluster) driven over GraphQL, throwaway Postgres and
Redis servers, and the helpers of scale runs. Nothing in the pipeline imports this package."""
