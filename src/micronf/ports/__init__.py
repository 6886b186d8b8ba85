"""Ports (§VI-D): how a µNF exchanges packet handles with its neighbours; one module per kind."""
