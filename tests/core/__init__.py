"""Tests of core/: the Beam-free config, parser, layouts and helpers."""
