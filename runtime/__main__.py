"""`python -m runtime` is `classify`."""

from runtime.cli import main

main()
