"""The search and the CLI: the only package that imports Ray."""
