"""``python -m edgekd`` (and ``torchrun ... -m edgekd distill RECIPE``): the ``edgekd`` command."""

from edgekd.cli import main

main()
