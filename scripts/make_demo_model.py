"""Rebuild the shipped demo model (data/droidft-demo/) from its recipe.

    scripts/make_demo_model.py [--out DIR]

Run it after changing the corpus (data/corpus/), the model shape or the pre-training
recipe in droidft/models/demo.py, then commit data/droidft-demo/. The build is seeded and
deterministic on a given BLAS: tests/test_demo_model.py rebuilds it and compares with
the committed weights. Takes 1-2 minutes on 2 cores with OpenBLAS (it re-runs itself in a
child process with OpenBLAS preloaded when started without it).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from droidft.models.demo import SHIPPED_DIR, build_demo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(SHIPPED_DIR), help=f"folder to write (default {SHIPPED_DIR})")
    args = parser.parse_args()
    print(build_demo_model(Path(args.out), force=True, log=lambda m: print(m, file=sys.stderr, flush=True)))


if __name__ == "__main__":
    main()
