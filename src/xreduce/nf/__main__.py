"""``python -m xreduce.nf params.txt ...``: the ``xreduce-nf`` command."""
import sys

from xreduce.cli.nf import main

sys.exit(main())
