"""``gunicorn --workers 2 bench.prototype.wsgi:application`` (from the repository root)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.prototype.settings"
application = get_wsgi_application()
