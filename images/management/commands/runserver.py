"""``runserver`` that applies pending migrations first (API.md §7).

A fresh clone needs nothing but ``python manage.py runserver``. Migrations run
once, in the process that starts the autoreloader, not again in each reload.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand
from django.core.management import call_command
from django.core.servers.basehttp import WSGIRequestHandler

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
