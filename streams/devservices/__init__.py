"""Local Kafka and Jaeger for development and tests, and a worker process to drive."""
