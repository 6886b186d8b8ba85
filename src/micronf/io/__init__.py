"""Packet I/O outside the shared-memory data plane: the Rx/Tx backends and capture files.

* capture files: :mod:`~micronf.io.trace` (a capture in memory, pool <-> trace kernels),
  :mod:`~micronf.io.pcap_read` (+ its kernels in :mod:`~micronf.io.pcap_parse`),
  :mod:`~micronf.io.pcap_write`, :mod:`~micronf.io.linktype`;
* interfaces: :mod:`~micronf.io.afpacket` (spec, sockets), :mod:`~micronf.io.afpacket_rx`,
  :mod:`~micronf.io.afpacket_tx`;
* synthetic traffic: :mod:`~micronf.io.generator_spec` (what to send), :mod:`~micronf.io.generator`
  (templates and their replay); :mod:`~micronf.io.replay`, :mod:`~micronf.io.sequence`;
* :mod:`~micronf.io.backend` and :mod:`~micronf.io.specs`: the Rx/Tx backend protocol and specs.
"""
