"""Tests of the port kinds."""
