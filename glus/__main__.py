"""`python -m glus ...` (and `torchrun --nproc_per_node=N -m glus predict ...`): the `glus` command."""
import sys

from glus.cli import main

sys.exit(main())
