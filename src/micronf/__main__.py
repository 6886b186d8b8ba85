"""``python -m micronf`` is the ``micronf`` command."""

from micronf.app.cli import main

main()
