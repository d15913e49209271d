#!/usr/bin/env python
"""Django's command-line utility for RankLoop."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        # Load the settings now, so that a missing secret or a malformed variable is one line
        # naming it (config/env.py), not a traceback.
        settings.INSTALLED_APPS  # noqa: B018
    except ImproperlyConfigured as exc:
        sys.exit(f"RankLoop cannot start: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
