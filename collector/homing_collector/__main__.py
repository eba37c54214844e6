import sys

from homing_collector.cli import main

sys.exit(main())
