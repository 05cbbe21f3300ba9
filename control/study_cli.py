"""`python -m engine study ...`: create a study from a file, show its state, stop or resume it.

  python -m engine study create study.yaml [--db URL] [--preview]   queue it, print "study N"
  python -m engine study show ID [--json]                           state, trials, grouped summary
  python -m engine study stop ID | resume ID
  python -m engine study yaml ID                                    the study file, to edit and re-run
  python -m engine study ensemble ID                                a K-fold study: test its finished folds together

A refused study file exits with code 2 and one line per bad field on stderr; nothing is queued.
"""

from __future__ import annotations

import json
import math

from control.cli_io import print_errors


def add_study_parser(sub) -> None:
    st = sub.add_parser("study", help="design, launch and read a study (a set of runs)")
    ss = st.add_subparsers(dest="study_command", required=True)
    c = ss.add_parser("create", help="validate a study file and queue its trials")
    c.add_argument("file")
    c.add_argument("--preview", action="store_true", help="print what would be queued; queue nothing")
    for name in ("show", "stop", "resume", "yaml", "ensemble"):
        p = ss.add_parser(name)
        p.add_argument("id", type=int)
        if name == "show":
            p.add_argument("--json", action="store_true")
    for p in ss.choices.values():
        p.add_argument("--db", help="SQLAlchemy URL (default: $LAB_DB_URL or sqlite:///lab.db)")
        p.set_defaults(fn=cmd_study)


def _clean(x):
    """JSON without NaN (an n = 1 group has no std or CI: null)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def cmd_study(args) -> int:
    from control import studies
    from control.launcher import bootstrap

    url = bootstrap(args.db)
    if args.study_command == "create":
        spec, base, errors = studies.load_study_file(args.file, url)
        if errors:
            return print_errors(errors)
        if args.preview:
            print(json.dumps(_clean(studies.preview(spec, base)), indent=2, default=str))
            return 0
        print(f"study {studies.create_study(url, spec, base)}", flush=True)
        return 0
    from db import queries

    if queries.get_study(url, args.id) is None:
        return print_errors([("id", f"no study {args.id}")])
    if args.study_command == "stop":
        studies.stop_study(url, args.id)
    elif args.study_command == "resume":
        studies.resume_study(url, args.id)
    elif args.study_command == "yaml":
        print(studies.study_yaml(url, args.id), end="")
        return 0
    elif args.study_command == "ensemble":  # what a resumed K-fold study runs in the background
        from control.study_kfold import ensemble_due, make_ensemble

        k = queries.get_study(url, args.id)["spec"]["study"].get("kfold")
        if not k or not ensemble_due(url, args.id, k):
            return print_errors([("id", f"study {args.id} is not a K-fold study whose folds are all done")])
        if not (ensemble_id := make_ensemble(url, args.id, k)):
            return print_errors([("id", f"study {args.id}: no ensemble made (see its page)")])
        print(f"run {ensemble_id}")
        return 0
    state = studies.study_state(url, args.id)
    if getattr(args, "json", False):
        print(json.dumps(_clean(state), indent=2, default=str))
    else:
        print(_text(state))
    return 0


def _text(state: dict) -> str:
    c = state["counts"]
    lines = [
        f"study {state['id']} {state['name']}: {state['status']} ({state['strategy']}, "
        f"{state['objective']['direction']} {state['objective']['metric']})",
        "  " + ", ".join(f"{k} {v}" for k, v in c.items() if v) + f" of {state['planned_runs']} planned",
    ]
    for g in state["summary"]:
        ci = "" if math.isnan(g["ci_low"]) else f" 95% CI [{g['ci_low']:.4f}, {g['ci_high']:.4f}]"
        std = "" if math.isnan(g["std"]) else f" ± {g['std']:.4f}"
        lines.append(f"  {g['params']}: {g['mean']:.4f}{std} (n={g['n']}){ci}")
    if kf := state.get("kfold"):
        from control.study_kfold import summary_line

        lines.append("  " + summary_line(kf, state["status"]))
    return "\n".join(lines)
