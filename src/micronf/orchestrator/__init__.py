"""Global control (paper §IV-D): input files, composition and optimization of SFCs into µNF graphs,
placement on agents, and the orchestrator service.

- :mod:`~micronf.orchestrator.models`: the file kinds (µNF descriptor, VNF template, SFC request);
  an invalid file is a :class:`~micronf.documents.SpecError`;
- :mod:`~micronf.orchestrator.load`: reading and checking them, from files (:func:`load_sfc`) or
  from memory (:func:`load_sources`);
- :mod:`~micronf.orchestrator.compose`: the unoptimized and optimized µNF graph, with the rewrites;
- :mod:`~micronf.orchestrator.placement`: which agent and cores run the graph;
- :mod:`~micronf.orchestrator.service`, :mod:`~micronf.orchestrator.store`,
  :mod:`~micronf.orchestrator.api`: the service, its state and its northbound HTTP API.

It talks to agents only through :mod:`micronf.api`. The tables and drawings of ``micronf plan``
are in :mod:`micronf.app.report` and :mod:`micronf.app.render`.
"""
