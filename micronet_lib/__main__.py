import sys

from micronet_lib.cli import main

sys.exit(main())
