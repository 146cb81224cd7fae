"""`python -m llmproxy.k8sconf`: write the Kubernetes manifests (a kustomize base) into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmproxy.common.errors import exit_on_config_error
from llmproxy.config import load_config
from llmproxy.k8sconf.build import build_files, read_inputs, write


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.k8sconf", description=__doc__)
    parser.add_argument("--config", help="configuration file (default: deploy/llmproxy.yaml)")
    parser.add_argument("--out", type=Path, default=Path("deploy/k8s"), help="output folder")
    args = parser.parse_args()
    with exit_on_config_error("llmproxy.k8sconf"):
        # Not the caller's environment: the committed files must not depend on who made them.
        config = load_config(args.config, environ={})
        files = build_files(config, read_inputs(config))
    for path in write(args.out, files):
        print(path)


if __name__ == "__main__":
    main()
