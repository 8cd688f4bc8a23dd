"""`thunderhelm dashboard`: a web UI over the event log and Jaeger's API."""
