"""`python -m going_modular.deploy.serve`: the web service, the same command as
`python -m going_modular.deploy.web` (the name README, notebooks and scripts use)."""
import sys

from going_modular.deploy import cli
from going_modular.deploy.web.__main__ import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
