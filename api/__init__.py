"""Serving: the table → answers, over HTTP and on the command line."""
