"""python -m lstmkit: the same as the lstmkit command."""

from .cli import main

main()
