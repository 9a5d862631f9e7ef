"""`python -m email_consumer ...`, the same as the `email-consumer` command."""

import sys

from email_consumer.cli import main

sys.exit(main())
