"""Run a benchmark: ``python -m bench NAME [args]``. Each ends by printing one line of JSON."""

from __future__ import annotations

import fcntl
import importlib
import os
import pkgutil
import sys
from pathlib import Path

# One benchmark at a time on this machine's database: a bench points the settings rows at its own
# fake Ollama and puts them back when it ends, so two at once restore each other's changes (and
# leave the service pointing at a fake that is gone); and two would share the cores they measure.
LOCK = Path(__file__).resolve().parent.parent / "var" / "bench.lock"


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] not in names:
        print(f"usage: python -m bench NAME [args]   (NAME: {', '.join(names)})", file=sys.stderr)
        return 2
    if not {"-h", "--help"} & set(argv):
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        held = open(LOCK, "a+")  # noqa: SIM115 - kept open (and locked) until the process ends
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.seek(0)
            print(
                f"another benchmark is running ({held.read().strip() or 'unknown'}); "
                "benchmarks change the settings and share the cores: wait until it ends",
                file=sys.stderr,
            )
            return 2
        held.truncate(0)
        held.write(f"pid {os.getpid()}: python -m bench {' '.join(argv)}")
        held.flush()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
