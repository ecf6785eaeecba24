"""Local Flink and Spark clusters for the portable runner (make flink-up,
spark-up; tests/pipeline/test_engines.py; benchmarks/engines.py)."""
