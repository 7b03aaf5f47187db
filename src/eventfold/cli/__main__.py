"""``python -m eventfold.cli``: the ``eventfold`` command."""

from eventfold.cli import main

main()
