"""Packet I/O outside the shared-memory data plane: capture files (``micronf.io.pcap``)."""
