"""Tests of Cairn's in-job Python runtime (``python/cairn``); standard library only.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""
