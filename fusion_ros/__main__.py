"""``python -m fusion_ros`` = ``fusion-ros``."""

import sys

from fusion_ros.cli import main

sys.exit(main())
