"""Entry point: python3 -m provisioner.agent"""

import sys

from .main import main

sys.exit(main())
