"""`sav-assets models list` / `models promote <sha>`: the model registry (lib/train/registry.py).

Promoting a model makes it the labeling model: ``SAM2Resource`` loads it (checkpoint URI and SHA-256
pin from the ``models`` table), ``masklets``' code_version changes when the code location reloads,
and the next run relabels.
"""

from __future__ import annotations

import json

from sav_assets.cli.common import UsageError, _lake


def add_parser(sub) -> None:
    m = sub.add_parser("models", help="list fine-tuned SAM 2 models, promote one to be the labeling model")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    ls = msub.add_parser("list", help="registered models, newest first (* = promoted)")
    ls.add_argument("--root", default=None)
    ls.set_defaults(fn=cmd_list)
    pr = msub.add_parser("promote", help="make a model (SHA-256 or a unique prefix) the labeling model")
    pr.add_argument("sha256")
    pr.add_argument("--root", default=None)
    pr.set_defaults(fn=cmd_promote)


def cmd_list(args) -> int:
    from sav_assets.lib.train.registry import list_models

    rows = list_models(_lake(args.root))
    if not rows:
        print("no registered models (materialize sam2_finetune)")
    for r in rows:
        jf = json.loads(r["metrics_json"] or "{}").get("val_jf")
        print(f"{'*' if r['promoted'] else ' '} {r['sha256'][:16]} {r['model_config']}@{r['image_size']} "
              f"steps={r['steps']} val_J&F={jf if jf is not None else '-'} parent={(r['parent_sha256'] or 'random')[:16]} "
              f"{r['checkpoint_uri']}")
    return 0


def cmd_promote(args) -> int:
    from sav_assets.lib.train.registry import promote

    try:
        row = promote(_lake(args.root), args.sha256)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from e
    print(f"promoted {row['sha256']}: the labeling model is now {row['checkpoint_uri']} "
          "(masklets are stale: reload the code location, re-run to relabel)")
    return 0
