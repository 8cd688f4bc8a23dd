"""The ``thunderhelm`` command line: commands, the Kafka client and rendering."""
