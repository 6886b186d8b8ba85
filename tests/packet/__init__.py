"""Tests of micronf.packet."""
