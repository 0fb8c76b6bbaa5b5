import sys

from evstation.runtime.cli import main

sys.exit(main())
