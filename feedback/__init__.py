"""codeloop telemetry: DuckDB schema and migrations (db), the batched writer (writer),
reports (queries), A/B statistics (stats) and the Parquet export for training (export).

Imports nothing else of codeloop's; the server and the trainer import it.
"""
