import sys

from homing_collector._entry import main

sys.exit(main())
