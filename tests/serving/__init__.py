"""Tests of serving/: the REST and gRPC server as clients use it."""
