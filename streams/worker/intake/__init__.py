"""The intake: users' records on run-requests screened, forwarded or dead-lettered."""
