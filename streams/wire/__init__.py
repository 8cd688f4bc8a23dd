"""The wire as the worker and its tools read and write it: records, envelopes, failures."""
