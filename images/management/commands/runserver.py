"""``runserver`` that applies pending migrations first and works in the background (API.md §7).

A fresh clone needs nothing but ``python manage.py runserver``. Migrations run
once, in the process that starts the autoreloader, not again in each reload.
The serving process also runs the compact backlog in a thread at the lowest
CPU priority (:mod:`images.lifecycle.workers`), so JPEGs uploaded to the
embedded default are held as JPEG XL a moment after their answer; and a
deliverer thread sends events to webhooks and MQTT (:mod:`images.delivery`),
with nothing else to start.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand
from django.core.management import call_command
from django.core.servers.basehttp import WSGIRequestHandler

from images.delivery.worker import start_delivering
from images.lifecycle.workers import start_compacting

# The development server's own answers to malformed HTTP (a bad request line,
# an oversized header) come from http.server as HTML; http.server's documented
# class attributes make them contract errors. Only the fixed explanation is
# used: the message can hold client bytes, unsafe inside JSON.
WSGIRequestHandler.error_message_format = '{"errors": {"detail": ["%(code)d %(explain)s"]}}\n'
WSGIRequestHandler.error_content_type = "application/json"


class Command(RunserverCommand):
    help = "Apply pending migrations, then start the development server."

    def handle(self, *args: Any, **options: Any) -> None:
        if os.environ.get("RUN_MAIN") != "true":
            call_command("migrate", interactive=False, verbosity=0)
        super().handle(*args, **options)

    def inner_run(self, *args: Any, **options: Any) -> None:
        # The serving process (the autoreloader's child, or the only one).
        start_compacting(threading.Event())
        start_delivering(threading.Event())
        super().inner_run(*args, **options)
