"""`python -m training`: search with Ray Tune, register the winner in MLflow.

Examples:
    python -m training                                  # bundled breast_cancer data
    python -m training --data my.csv --target label     # your own data
    python -m training --num-samples 4 --set-champion
    python -m training --data diabetes --model-name diabetes_regressor   # regression
    python -m training --data prices.csv --target price --task regression
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from configs import default_tracking_uri, load_training_config
from training.data import load_dataset, resolve_task
from training.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="training YAML (default: configs/training.yaml)")
    parser.add_argument("--data", help="bundled dataset name or CSV/Parquet path")
    parser.add_argument("--target", help="label column of --data")
    parser.add_argument(
        "--task",
        choices=["classification", "regression", "auto"],
        help="what the target is (default: the config's task; auto: regression for a float "
        "target with many distinct values)",
    )
    parser.add_argument("--num-samples", type=int, help="Ray Tune trials")
    parser.add_argument("--model-name", help="registered model name")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: env or .mlflow/)")
    parser.add_argument(
        "--set-champion",
        action="store_true",
        help="move alias 'champion' to the new version if it passes min_score",
    )
    parser.add_argument(
        "--if-no-champion",
        action="store_true",
        help="do nothing when the registry already has a champion (used by `make run`)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    cfg = load_training_config(args.config)
    overrides = {
        "dataset": args.data,
        "target": args.target,
        "task": args.task,
        "num_samples": args.num_samples,
        "model_name": args.model_name,
    }
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    cfg = type(cfg).model_validate(cfg.model_dump())
    tracking_uri = args.tracking_uri or default_tracking_uri()

    if args.if_no_champion:
        from training import registry

        client = registry.get_client(tracking_uri)
        current = registry.alias_version(client, cfg.model_name, registry.CHAMPION)
        if current is not None:
            print(f"{cfg.model_name}@champion is v{current}; nothing to train.")
            return 0

    try:
        data = load_dataset(cfg.dataset, cfg.target)
        resolve_task(cfg.task, data[1])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(cfg, tracking_uri, data=data, set_champion=args.set_champion)
    except ValueError as exc:  # a family of the other task, a champion of the other task
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, default=str))
    print(f"MLflow: {tracking_uri}  experiment={cfg.experiment_name}  run={result.parent_run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
