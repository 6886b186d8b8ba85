"""Tests of micronf.dataplane."""
