"""The `kdx` command. Each subcommand parses, calls one library function, prints.

A mistake a user can make ends as one line on stderr and exit code 2.
Heavy imports (torch, and later Ray and MLflow) happen inside the subcommands
so `kdx --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Experiment-level sections that `kdx run` accepts and leaves to `kdx search`.
EXPERIMENT_KEYS = ("experiment", "space", "search", "resources", "tracking")


def _load_run_config(path: str, overrides: list[str]):
    from distill.config import RunConfig, apply_overrides, load_yaml

    raw = apply_overrides(load_yaml(path), overrides)
    return RunConfig.from_dict(raw, ignore=EXPERIMENT_KEYS)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def cmd_run(args: argparse.Namespace) -> int:
    from distill.cache import atomic_write
    from distill.job import distill_once

    config = _load_run_config(args.config, args.set)
    started = time.perf_counter()

    def progress(epoch: int, m: dict[str, float]) -> None:
        if epoch == 1 or epoch % 10 == 0 or epoch == config.train.epochs:
            print(f"  epoch {epoch:>3}/{config.train.epochs}  train_loss {m['train_loss']:.4f}  val_acc {m['val_acc']:.4f}", flush=True)

    job = distill_once(config, twin=args.twin, report=progress)
    rows = [("model", "params", "latency_ms", "val_acc", "test_acc")]
    for name, r in (("teacher", job.teacher), ("student", job.student), ("scratch twin", job.twin)):
        if r is not None:
            rows.append((name, f"{r.params:,}", f"{r.latency_ms:.3f}", f"{r.val_acc:.4f}", f"{r.test_acc:.4f}"))
    print()
    _print_table(rows)
    result = job.to_dict()
    if job.twin is not None:
        print(f"\ndistillation gain (student - twin, test): {100 * result['gain']:+.2f} points")
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    out = Path(args.out or ".") / "result.json"
    atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=2)))
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdx", description="Knowledge-distillation experiment lab.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="one distillation run (teacher trained or loaded, student distilled)")
    p.add_argument("config", help="run or experiment config (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.lr=0.01")
    p.add_argument("--out", help="folder for result.json (default: the working directory)")
    p.add_argument("--twin", action="store_true", help="also train the from-scratch twin and print the distillation gain")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from distill.errors import KdxError

    try:
        return args.func(args)
    except KdxError as e:
        print(f"kdx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
