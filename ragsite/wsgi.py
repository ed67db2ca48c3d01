import os
import sys

from django.core.wsgi import get_wsgi_application

from resilience.env import EnvError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
try:
    application = get_wsgi_application()
except EnvError as exc:  # a bad environment variable: its name and the fix, as manage.py says it
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(3) from None  # gunicorn's "worker failed to boot": the server stops, no retry loop
