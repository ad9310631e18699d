"""``python -m mlsrv.cli``: the same entry point as the ``mlsrv`` console script."""

from mlsrv.cli.app import main

main()
