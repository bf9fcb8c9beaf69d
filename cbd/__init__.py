"""Care-by-Design command line and local runtime: the embedded stack and the service launcher."""
