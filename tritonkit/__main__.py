"""``python -m tritonkit``."""

from tritonkit.cli import main

main()
