"""`pytest --nbval notebooks` compares outputs after the committed sanitizer's regexes (times, addresses,
ports, the fast-mode line: nbval_sanitize.cfg beside this file) without having to name it; a
`--nbval-sanitize-with` given on the command line still wins."""
from pathlib import Path


def pytest_configure(config):
    if getattr(config.option, "nbval_sanitize_with", None) is None:
        config.option.nbval_sanitize_with = str(Path(__file__).with_name("nbval_sanitize.cfg"))
