"""Benchmark scripts that print figures (not tests).

A bench in one file runs as ``python bench/NAME.py``; one that spans files is
a package run from the repository root as ``python -m bench.NAME`` (``live``,
``lifecycle``, ``sidebyside``, ``storage``). What they share is in
``bench.support``: the flat scripts put the repository root on ``sys.path``
first, so that it imports as that.
"""
