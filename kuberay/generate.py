"""Generate the RayService's `serveConfigV2` from `serve_config.yaml` (the one source).

In the cluster the Serve proxy must listen on every interface of its pod (`0.0.0.0`), and the
MLflow tracking URI comes from the pods' `MLFLOW_TRACKING_URI` (a Secret), never from the file.
Everything else is copied as is, so a change to serve_config.yaml reaches Kubernetes only
through `make kuberay`; tests/unit/test_kuberay.py fails while the two disagree.

    python -m kuberay.generate           # rewrite serveConfigV2 in kuberay/rayservice.yaml
    python -m kuberay.generate --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = ROOT / "serve_config.yaml"
RAYSERVICE = ROOT / "kuberay" / "rayservice.yaml"
HEADER = "# Generated from serve_config.yaml by `make kuberay`: edit that file, not this block.\n"
KEY = re.compile(r"^(?P<indent>[ ]*)serveConfigV2: \|[-+]?\n")


def serve_config_v2(source: Path = SERVE_CONFIG) -> str:
    config = copy.deepcopy(yaml.safe_load(source.read_text()))
    config.setdefault("http_options", {})["host"] = "0.0.0.0"
    for app in config.get("applications", []):
        (app.get("args") or {}).pop("tracking_uri", None)
    return HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def render(manifest: str, block: str) -> str:
    """``manifest`` with the literal block under ``serveConfigV2: |`` replaced by ``block``."""
    lines = manifest.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        end = i + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > indent
        ):
            end += 1
        # Blank lines at the end of the block belong to what follows it.
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1
        pad = " " * (indent + 2)
        body = [pad + row if row.strip() else "\n" for row in block.splitlines(keepends=True)]
        return "".join(lines[: i + 1] + body + lines[end:])
    raise ValueError("no 'serveConfigV2: |' block in the manifest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kuberay.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the manifest is stale")
    args = parser.parse_args(argv)
    current = RAYSERVICE.read_text()
    wanted = render(current, serve_config_v2())
    if current == wanted:
        print(f"{RAYSERVICE.relative_to(ROOT)}: serveConfigV2 up to date")
        return 0
    if args.check:
        print(f"{RAYSERVICE.relative_to(ROOT)}: serveConfigV2 is stale; run `make kuberay`")
        return 1
    RAYSERVICE.write_text(wanted)
    print(f"{RAYSERVICE.relative_to(ROOT)}: serveConfigV2 regenerated from serve_config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
