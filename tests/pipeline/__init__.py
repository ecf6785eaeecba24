"""Tests of pipeline/: the Beam job, its stages, validation, drift, skew,
schema drafting, and the runners and engines it runs on."""
