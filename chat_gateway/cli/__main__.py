import sys

from chat_gateway.cli import main

sys.exit(main())
