"""``python -m micronf`` is the ``micronf`` command."""

from micronf.cli import main

main()
