"""Small real servers for tests, run as subprocesses on 127.0.0.1."""
