import sys

from radgen.cli import main

sys.exit(main())
