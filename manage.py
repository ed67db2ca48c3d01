#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    from django.core.management import execute_from_command_line

    from resilience.env import EnvError

    try:
        execute_from_command_line(sys.argv)
    except EnvError as exc:  # a bad environment variable: its name and the fix, not a traceback
        print(f"Configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
