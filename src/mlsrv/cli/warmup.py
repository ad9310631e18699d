"""``mlsrv warmup``: a version's warmup file from request logs.

``mlsrv serve`` writes a model's sampled calls as ``PredictionLog`` TFRecord files (its
``logging_config``), which is the format of TF Serving's warmup file
``<version>/assets.extra/tf_serving_warmup_requests``. A log can be copied there as it is when it
is small, but TF Serving (and mlsrv) refuse a warmup file of more than 1000 records and logs grow
without end: this command draws up to ``--records`` replayable records uniformly from any number
of logs (Predict, Classify, Regress, MultiInference; optionally of one ``--model``) and writes them
to the version's warmup file, atomically, so a server that picks the version up meanwhile never
reads half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mlsrv.cli.runner import run
from mlsrv.errors import UsageError

#: Where TF Serving reads warmup records, under a version directory (``saved_model_warmup_util.cc``).
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup(
    logs: Annotated[
        list[str], typer.Argument(help="Request-log files (PredictionLog TFRecords) to draw from.", metavar="LOG")
    ],
    to: Annotated[
        str, typer.Option("--to", help="The model version directory whose warmup file is written (e.g. m/3).")
    ],
    records: Annotated[
        int, typer.Option("--records", "-n", help="Records to draw (TF Serving reads at most 1000).", min=1, max=1000)
    ] = 100,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only records logged for this model name.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw (the same logs and seed, the same file).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a warmup file the version already has.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a model version's warmup file from request logs (mlsrv serve's logging_config)."""
    run(lambda: _main(logs, to, records, model, seed, force, json_out))


def _main(logs: list[str], to: str, count: int, model: str | None, seed: int, force: bool, json_out: bool) -> None:
    from mlsrv.client import prediction_logs
    from mlsrv.protocol import tfrecord

    version = Path(to)
    if not version.is_dir():
        raise UsageError(f"--to {to}: not a directory (give a model version directory, e.g. models/m/3)")
    target = version / WARMUP_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} exists; --force replaces it")
    chosen, eligible = prediction_logs.sample_records(logs, count, model=model, seed=seed)
    if not chosen:
        which = f" of model {model}" if model is not None else ""
        raise UsageError(f"no record{which} that warmup can replay (Predict, Classify, Regress, MultiInference) "
                         f"in {', '.join(logs)}")  # fmt: skip
    target.parent.mkdir(exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tf_serving_warmup_requests.")
    try:
        with os.fdopen(handle, "wb") as file:
            for record in chosen:
                file.write(tfrecord.frame(record))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if json_out:
        typer.echo(json.dumps({"path": str(target), "records": len(chosen), "eligible": eligible}))
    else:
        typer.echo(f"wrote {len(chosen)} of {eligible} replayable records to {target}")
