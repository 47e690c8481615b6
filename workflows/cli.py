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


def _load_run_config(path: str, overrides: list[str]):
    from distill.config import RunConfig, apply_overrides, load_yaml, resolve_paths

    from .experiment import EXPERIMENT_KEYS  # sections `kdx run` accepts and leaves to `kdx search`

    raw = resolve_paths(apply_overrides(load_yaml(path), overrides), Path(path).resolve().parent)
    return RunConfig.from_dict(raw, ignore=EXPERIMENT_KEYS)


def cmd_run(args: argparse.Namespace) -> int:
    from distill.cache import atomic_write
    from distill.job import distill_once

    from .printing import print_table

    config = _load_run_config(args.config, args.set)
    started = time.perf_counter()

    def progress(e) -> None:
        if e.epoch == 1 or e.epoch % 10 == 0 or e.epoch == config.train.epochs:
            ppl = f"  val_ppl {e.val_ppl:.4f}" if e.val_ppl is not None else ""
            print(f"  epoch {e.epoch:>3}/{config.train.epochs}  train_loss {e.train_loss:.4f}{ppl}  {config.task.quality_names[0]} {e.val_acc:.4f}",
                  flush=True)

    job = distill_once(config, twin=args.twin, report=progress)
    task = job.data.task_type
    rows = [("model", "params", "latency_ms", *task.quality_names) + task.result_columns()]
    start = job.random_twin is not None  # the student started from the teacher: two twins
    for name, r in (("teacher", job.teacher), ("student", job.student), ("same-start twin" if start else "scratch twin", job.twin),
                    ("random-start twin", job.random_twin)):
        if r is not None:
            rows.append((name, f"{r.params:,}", f"{r.latency_ms:.3f}", f"{r.val_acc:.4f}", f"{r.test_acc:.4f}") + task.result_cells(r))
    print()
    print_table(rows)
    if job.student.at_start is not None:
        print(f"\nthe student's start before training ({config.train.start_words}): {task.start_text(job.student.at_start)}")
    result = job.to_dict()
    if lines := task.result_lines(result):
        print(lines)
    if job.data.tokens is not None and job.data.tokens.floor is not None:
        print(f"\nentropy floor (the true source's test cross-entropy): {job.data.tokens.floor:.4f} nats/token")
    if job.twin is not None:
        twin = "same-start twin" if start else "twin"
        print(task.gain_line(result, twin, start))
        print(f"one seed each, so no spread and no verdict; the twin{'s keep' if start else ' keeps'} the student's recipe and learn"
              f"{'' if start else 's'} {task.twin_words}" + (f", the same-start twin {config.train.start_words}" if start else "")
              + ("; kdx search with search.twins: tuned tunes every arm over seeds" if task.recipes else ""))
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    out = Path(args.out or ".") / "result.json"
    atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=2)))
    print(f"wrote {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .experiment import describe, load_experiment

    from distill.data import load_data, small_split_line

    exp = load_experiment(args.config, args.set, need_space=False)
    data = load_data(exp.run.data)  # a missing file or bad labels are found here, and a split too small to rank recipes
    module = None
    if not exp.run.teacher.settings["train"]:  # a checkpoint or folder that does not load, fit or match the labels is found here too (no training)
        from distill.teacher import get_teacher

        module, _ = get_teacher(exp.run, data, log=lambda s: None)
    from .session import may_prune

    if may_prune(exp):  # a student the teacher cannot be cut to: wider, deeper, another family or head size
        from distill.teacher import check_prune

        check_prune(exp.run, data, module, student=exp.run.train.init == "prune")  # a space's shapes are checked trial by trial
    print(describe(exp))
    if line := small_split_line(data):
        print(line)
    print("valid")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from distill.data import load_data
    from distill.teacher import prepare_teacher

    config = _load_run_config(args.config, args.set)
    data = load_data(config.data)
    teacher = prepare_teacher(config, data, ["logits", "features", "attentions"])
    info, out = teacher.info, teacher.outputs
    val, test = data.task_type.quality_names
    print(f"teacher {info.key}: {info.source}, {val} {info.val_acc:.4f}, {test} {info.test_acc:.4f}, "
          f"{info.params:,} params, {info.latency_ms:.3f} ms; outputs cached ({len(out.logits)} samples, "
          f"{len(out.features)} feature maps, {len(out.attentions)} attention maps)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .experiment import load_experiment
    from .search import run_search

    exp = load_experiment(args.config, args.set, name=args.name, num_samples=args.num_samples,
                          max_concurrent=args.max_concurrent, tracking_uri=args.tracking_uri, smoke=args.smoke)
    print(f"search '{exp.name}': {exp.search.num_samples} trials, {exp.search.max_concurrent} at a time, "
          f"objectives {exp.search.objectives}; tracking {exp.tracking_uri}", flush=True)
    s = run_search(exp, resume=args.resume, address=args.address)
    dup = f" ({s.duplicates} of them duplicates of earlier trials, replayed without training)" if s.duplicates else ""
    print(f"\ndone in {s.elapsed_s:.0f} s: {s.finished} finished{dup}, {s.stopped} stopped early, {s.failed} failed, "
          f"{s.twins} scratch twins")
    if s.best:
        print(f"best by {exp.quality}: " + ", ".join(f"{k} {v:,.0f}" if k == "params" else f"{k} {v:.4g}" for k, v in s.best.items()))
    print(f"MLflow experiment '{s.experiment}' (id {s.experiment_id}), search run {s.parent_run_id}; browse with: kdx ui")
    if s.finished:
        from analysis.report import write_report
        from analysis.runs import load_runs

        from .printing import print_report

        report = write_report(load_runs(exp.tracking_uri, exp.name), Path(args.report_dir or f"kdx-report-{exp.name}"))
        print_report(report)
        print(f"report: {report.folder}/report.html")
    return 0


def _experiment_runs(args: argparse.Namespace):
    from analysis.runs import load_runs

    from .experiment import absolute_uri, default_tracking_uri

    return load_runs(absolute_uri(args.tracking_uri or default_tracking_uri()), args.experiment)


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import counts_line, running_note, write_report

    from .printing import print_report

    report = write_report(_experiment_runs(args), args.out, ui_url=args.ui_url)
    if running_note(report.info):
        print(f"note: {running_note(report.info)}")
    print(counts_line(report.info))
    print_report(report)
    print(f"wrote {report.folder}/report.html, pareto.csv, {', '.join(report.pictures)} (also on the search run)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_front

    from analysis.frontier import frontier_info
    from analysis.report import running_note

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    exp = _experiment_runs(args)
    info = frontier_info(exp)
    if running_note(info):
        print(f"note: {running_note(info)}; the front exported is today's")
    exported = export_front(exp, args.out, formats=formats, register=args.register, info=info)
    for e in exported:
        version = f", registered {args.register} v{e.version}" if e.version else ""
        print(f"{e.label}: {e.folder} ({', '.join(e.files)}; {e.metric} {e.test_score:.4f} reproduced by every format{version})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from .experiment import absolute_uri, default_tracking_uri
    from .ui import serve_ui

    return serve_ui(absolute_uri(args.tracking_uri or default_tracking_uri()), args.host, args.port, args.experiment, args.open)


# MLflow's HTTP client retries each call for about 4 minutes by default (7 retries, backoff
# factor 2, 120 s timeout; mlflow/environment_variables.py): a dead server stalled a search
# for most of an hour. kdx's calls fail in seconds instead (Ray workers inherit these).
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdx", description="Knowledge-distillation experiment lab.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="one distillation run (teacher trained or loaded, student distilled)")
    p.add_argument("config", help="run or experiment config (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. train.lr=0.01")
    p.add_argument("--out", help="folder for result.json (default: the working directory)")
    p.add_argument("--twin", action="store_true", help="also train the from-scratch twin and print the distillation gain")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("search", help="a Ray Tune + Optuna search, every trial an MLflow run")
    p.add_argument("config", help="experiment config (YAML)")
    p.add_argument("--name", help="MLflow experiment name (default: the config's 'experiment')")
    p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--max-concurrent", type=int, help="trials at a time")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--resume", action="store_true", help="continue a killed search of the same experiment")
    p.add_argument("--smoke", action="store_true", help="a tiny budget end to end (2 epochs, at most 4 trials)")
    p.add_argument("--report-dir", help="where the end-of-search report goes (default: kdx-report-<experiment>)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("validate", help="check config and space; run nothing")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("teacher", help="train or load the teacher and cache its outputs")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("report", help="frontier pictures, pareto.csv and report.html for a search")
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tracking-uri")
    p.add_argument("--ui-url", default="http://127.0.0.1:5000", help="where `kdx ui` serves, for the links to runs")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="the Pareto-optimal students as deployable, checked files")
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--formats", default="safetensors,export,onnx", help="any of safetensors, export (torch.export .pt2), onnx")
    p.add_argument("--register", metavar="MODEL_NAME", help="also create MLflow registered-model versions with aliases")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ui", help="the MLflow UI for this tracking store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: only this machine)")
    p.add_argument("--tracking-uri")
    p.add_argument("--experiment", help="the search to link to (default: every search in the store, newest first)")
    p.add_argument("--open", action="store_true", help="open the runs table in a browser once the server answers")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    import os

    args = build_parser().parse_args(argv)
    for key, value in MLFLOW_HTTP.items():  # a user's own settings win
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not "Creating initial MLflow database tables..."
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from distill.errors import KdxError

    try:
        return args.func(args)
    except KdxError as e:
        print(f"kdx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdx: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if type(e).__module__.split(".")[0] not in ("mlflow", "requests", "urllib3"):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        print(f"kdx: error: the MLflow store stopped answering ({type(e).__name__}: {first}); a search can continue with --resume", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
