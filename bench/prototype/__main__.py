"""``python -m bench.prototype migrate --run-syncdb``: Django's manage.py for the stand-in."""

import os
import sys

from django.core.management import execute_from_command_line

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.prototype.settings"
execute_from_command_line([sys.argv[0], *sys.argv[1:]])
