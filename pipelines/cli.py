"""`raylane <command> [--config PATH] [key=value ...]` (also `python -m raylane ...`).

Parsing and config checks happen here, before Ray starts, so a typo fails in about a second.
"""

from __future__ import annotations

import argparse
import os
import sys

from raylane.config import ConfigError, check_data_inputs, check_model_input, describe, load_config
from raylane.console import VERBOSE_ENV, quiet_libraries
from raylane.redact import redact
from raylane.registry import MODEL_URIS

COMMAND_HELP = {
    "run": "everything: ingest -> sweep (or train) -> evaluate -> register -> serve",
    "ingest": "read, clean, split and tokenize the source into Parquet shards + manifest",
    "train": "fine-tune once on an ingested dataset (--dataset)",
    "tune": "sweep hyperparameters on an ingested dataset (--dataset)",
    "evaluate": "score a model (--model: export dir or models:/ URI) on the test split; --register promotes it",
    "serve": "serve a registered model over HTTP until Ctrl-C (--model, default the champion)",
    "predict": "score a dataset (--input glob or URI) and write predictions as Parquet (--output)",
    "rollout": "a canary rollout of the registered model: status, or promote / abort it by hand",
    "loop": "watch the served champion; on a trigger (loop.triggers) retrain, gate and roll out (--once: one look)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raylane",
        description="A Ray-native ML pipeline, tracked in MLflow. Without --config the embedded default runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in YAML, or override as key=value):\n" + "\n".join(describe()),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, help_text in COMMAND_HELP.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog="Run `raylane --help` for every config key."
        )
        if name == "rollout":
            p.add_argument("action", choices=("status", "promote", "abort"), help="what to do with the rollout")
        p.add_argument("--config", help="YAML config (default: configs/default.yaml)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=3e-5")
        p.add_argument("--verbose", action="store_true", help="show Ray's INFO logs too (default: warnings only)")
        if name in ("train", "tune", "evaluate"):
            p.add_argument("--dataset", help="ingested dataset directory (default: <output_dir>/dataset)")
        if name in ("evaluate", "serve", "predict"):
            p.add_argument("--model", help="model dir or MLflow URI (default: the registry's champion)")
        if name in ("run", "ingest"):
            p.add_argument("--force", action="store_true", help="ingest again even if the output matches the source")
        if name == "loop":
            p.add_argument("--once", action="store_true", help="look once, run a cycle if one is due, exit (cron)")
        if name == "evaluate":
            p.add_argument("--register", action="store_true", help="gate and register the model afterwards")
        if name == "predict":
            p.add_argument("--input", required=True, help="path, glob or URI of the data to score")
            p.add_argument("--output", help="output directory (default: <output_dir>/predictions)")
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="replace --output even if raylane did not write it (default: only its own predictions)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read here, by init_ray and by the workers that inherit it
    quiet_libraries()  # before anything imports the libraries it quiets
    try:
        cfg = load_config(args.config, args.overrides)
        if args.command in ("run", "ingest", "train", "tune", "loop", "evaluate") and cfg.model.name_or_path.startswith(
            MODEL_URIS
        ):
            from raylane.registry import pin_base_model

            cfg = pin_base_model(cfg)  # a registered model to start from, fetched before the checks read it
        if args.command in ("run", "ingest", "loop"):
            check_data_inputs(cfg)
        if args.command in ("run", "ingest", "train", "tune", "loop"):
            check_model_input(cfg)
        if args.command in ("run", "ingest"):
            from raylane.tasks import get_task

            get_task(cfg.task).inputs.check_model(cfg.model.name_or_path)  # e.g. a chat template, for chats
        if args.command in ("run", "train", "tune", "loop") and cfg.train.peft == "lora":
            from raylane.train.lora import check_config

            check_config(cfg)  # the adapters' target layers exist, checked on a weightless copy
    except ConfigError as err:
        print(f"raylane: error: {redact(str(err))}", file=sys.stderr)
        return 2
    from raylane.preflight import PreflightError, preflight

    try:
        preflight(cfg, args.command)
    except PreflightError as err:
        print(f"raylane: error: {redact(str(err))}", file=sys.stderr)
        return 2
    from raylane.pipelines import commands  # heavy imports (ray, torch, mlflow) only once the config is good
    from raylane.sources import IngestError

    try:
        if args.command in ("run", "train", "tune", "loop", "evaluate") and cfg.train.distill.teacher:
            from raylane.distill import pin_teacher

            cfg = pin_teacher(cfg)  # one teacher version for the whole run, checked before Ray starts
        return commands.COMMANDS[args.command](cfg, args)
    # A whole-file problem, a secret or a dataset missing: named, no traceback.
    except (IngestError, ConfigError, FileNotFoundError) as err:
        print(f"raylane: error: {redact(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
