"""`python -m plauder.cli`."""

from plauder.cli.main import main

main()
