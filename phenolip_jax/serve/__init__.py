"""A local web page and JSON API for one case at a time (configs/serve.py; docs/serve.md)."""
