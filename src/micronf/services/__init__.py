"""The I/O services of a graph: Rx (frames in, classified) and Tx (exits out), their counters and config.

DESIGN §5 calls them special µNFs: they run as stages of the runtime's process runner, fed a plain
config (:mod:`micronf.services.config`), and import nothing above the runtime.
"""
