"""Recompose params.yaml from conf/ exactly as `dvc exp run -S` does (DVC's own function).

`dvc repro` does not compose; after editing conf/ run `make params` (or `dvc exp run`) so that
params.yaml, which DVC tracks and the stages read, says the same as conf/.
Usage: python scripts/compose_params.py [OUTPUT] [HYDRA_OVERRIDE ...]
"""

import sys
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

root = Path(__file__).resolve().parents[1]
output = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "params.yaml"
compose_and_dump(output, str(root / "conf"), None, "config", str(root), sys.argv[2:])
