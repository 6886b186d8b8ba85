"""The µNF runtime: the µNF model, graphs and their wiring, the generated hot loop, processes and the test harness."""
