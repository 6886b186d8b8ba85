"""The applications on top of everything: what a person runs.

- :mod:`~micronf.app.cli`: the ``micronf`` command line;
- :mod:`~micronf.app.run`: ``micronf run``, an SFC composed and run here with an in-process agent;
- :mod:`~micronf.app.offline`: a µNF graph run over a capture, every exit written to a pcap;
- :mod:`~micronf.app.report` and :mod:`~micronf.app.render`: the tables and drawings of ``micronf plan``.
"""
