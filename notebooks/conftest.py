"""`pytest --nbval notebooks` compares outputs after the committed sanitizer's regexes (times, addresses,
ports, the fast-mode line: nbval_sanitize.cfg beside this file) without having to name it; a
`--nbval-sanitize-with` given on the command line still wins."""
from pathlib import Path


def pytest_configure(config):
    # This hook runs before nbval's, which refuses a run where both its old spelling (--sanitize-with)
    # and the new one are set: a file given either way is left alone.
    given = (getattr(config.option, name, None) for name in ("nbval_sanitize_with", "sanitize_with"))
    if not any(given):
        config.option.nbval_sanitize_with = str(Path(__file__).with_name("nbval_sanitize.cfg"))
