"""`python -m producer_service` runs the same CLI as `producer-service`."""

import sys

from producer_service.cli import main

sys.exit(main())
