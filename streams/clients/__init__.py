"""What the CLI and the dashboard share: the Kafka client, dead letters, the trace tree, replay."""
