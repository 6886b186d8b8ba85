"""Global control (paper §IV-D): input files, composition and optimization of SFCs into µNF graphs.

- :mod:`~micronf.orchestrator.models`: the file kinds (µNF descriptor, VNF template, SFC request)
  and :class:`~micronf.orchestrator.models.SpecError`;
- :mod:`~micronf.orchestrator.load`: reading and checking them (:func:`load_sfc`);
- :mod:`~micronf.orchestrator.compose`: the unoptimized and optimized µNF graph, with the rewrites;
- :mod:`~micronf.app.render` and :mod:`~micronf.app.report`: drawings and tables
  for ``micronf plan``.
"""
