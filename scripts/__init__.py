"""Scripts the Makefile runs; a package so the tests and mypy import them under one name."""
