"""`python -m going_modular.deploy.monitor --log PATH`: the drift monitor (see monitor.drift)."""
import sys

from going_modular.deploy import cli
from going_modular.deploy.monitor.drift import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
