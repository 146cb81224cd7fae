"""`python -m llmproxy.envoyconf`: write Envoy's config and our descriptor set into a folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llmproxy.common.descriptors import descriptor_set
from llmproxy.common.errors import exit_on_config_error
from llmproxy.config import load_config
from llmproxy.envoyconf.build import build_bootstrap, write


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llmproxy.envoyconf", description=__doc__)
    parser.add_argument("--config", help="configuration file (default: $LLMPROXY_CONFIG)")
    parser.add_argument("--out", type=Path, default=Path("build"), help="output folder")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="as if no provider key were set (how the committed envoy/envoy.yaml is made)",
    )
    args = parser.parse_args()
    with exit_on_config_error("llmproxy.envoyconf"):
        config = load_config(args.config, os.environ)
    descriptor = descriptor_set().SerializeToString(deterministic=True)
    environ = {} if args.demo else os.environ
    print(write(args.out, build_bootstrap(config, descriptor, environ), descriptor))


if __name__ == "__main__":
    main()
