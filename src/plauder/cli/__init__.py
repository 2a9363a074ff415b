"""The `plauder` command line: a thin layer over the SDK and the server."""
