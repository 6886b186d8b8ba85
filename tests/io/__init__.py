"""Tests of micronf.io."""
