"""micronf test suite."""
