"""Tests of the µNF library: scapy packets in, expected packets out per label."""
