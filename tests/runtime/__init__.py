"""Tests of the µNF runtime."""
