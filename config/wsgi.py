"""WSGI entry point, used by the production server (`manage.py serve`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings  # noqa: E402 - once Django is set up

from images.http import fastpath  # noqa: E402

# Downloads take the fast path when IMAGES_DOWNLOAD_FAST_PATH is on (read per request).
application = fastpath.application(get_wsgi_application())

if settings.IMAGES_EVENTS_THREADS > 0:  # a serve HTTP worker, which holds event streams
    from images.http import stream_threads

    stream_threads.send_streams_from_own_threads()
    stream_threads.end_streams_on_shutdown()
