"""The µNF library: one file per µNF; importing a module registers its µNF."""
