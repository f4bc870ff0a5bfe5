"""TensorBoard's HParams tab showing what differs between runs: the summaries the zoo writes for it.

The HParams plugin takes its columns from an experiment summary (``hparams_config``) when some run
holds one (the first it finds), and otherwise from every run's session-start summary, marking as
``differs`` the keys whose values differ across the runs it sees; the dashboard ticks the first
five columns, the differing ones first (TensorBoard 2.21, ``backend_context.py`` and the HParams
dashboard). Lightning writes an experiment summary of each run's own keys, all marked as not
differing, plus the final metrics again as ``hp/*`` scalar cards: columns in alphabetical order, the
constant choices (``data``, ``encoder``, ...) ticked and the swept key not.

So, per run: a session-start summary of all its hyperparameters and a session-end summary; the
final metrics are the last values of the run's own scalars, which the plugin reads as they are (no
``hp/*`` copies). A sweep's job (``python run.py -m``, zoo/app/sweep_names.py) also writes the
experiment summary of its sweep, the same in every job: the swept keys (``differs``, ticked first),
then the values the sweep's command line sets for all its jobs (``trainer.max_epochs=2``; the caller
leaves out the config groups' choices), and the final metrics, the optimized one first. The constant
choices (``method=dae``, ``data``, ...) are not columns there: they are in ``hparams.yaml`` and
``run.json``. A single run writes no experiment summary, so that TensorBoard over several loose
runs computes what differs among them itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from zoo.app.sweep_names import SWEPT_KEYS


def sweep_columns(params: Mapping[str, Any], overridden: Sequence[str]) -> list[tuple[str, bool]]:
    """``[(key, differs)]`` of a sweep job's experiment summary: the swept keys, then the other overridden
    keys among ``params``; [] outside a sweep."""
    recorded = os.environ.get(SWEPT_KEYS, "")
    swept = [key for key in recorded.split(",") if key in params]
    if not swept:
        return []
    rest = [key for key in dict.fromkeys(overridden) if key in params and key not in swept]
    return [(key, True) for key in swept] + [(key, False) for key in rest]


def hparam_info(name: str, value: Any, differs: bool) -> api_pb2.HParamInfo:
    """The column of one hyperparameter, typed after its value."""
    if isinstance(value, bool):
        kind = api_pb2.DATA_TYPE_BOOL
    elif isinstance(value, (int, float)):
        kind = api_pb2.DATA_TYPE_FLOAT64
    else:
        kind = api_pb2.DATA_TYPE_STRING
    return api_pb2.HParamInfo(name=name, type=kind, differs=differs)


def write_hparams(
    writer: SummaryWriter,
    params: Mapping[str, Any],
    metric_names: Sequence[str],
    overridden: Sequence[str],
    first_metric: str | None = None,
) -> None:
    """The session summaries of one run and, for a sweep's job, its sweep's experiment summary."""
    columns = sweep_columns(params, overridden)
    summaries = []
    if columns:
        metrics = sorted(metric_names, key=lambda name: (name != first_metric, name))
        experiment = api_pb2.Experiment(
            hparam_infos=[hparam_info(key, params[key], differs) for key, differs in columns],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=name)) for name in metrics],
        )
        summaries.append((metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value = value
        else:
            start.hparams[key].string_value = str(value)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    summaries.append((metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)))
    summaries.append((metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)))
    file_writer = writer._get_file_writer()
    for tag, data in summaries:
        summary = Summary()
        summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data))
        file_writer.add_summary(summary)
    writer.flush()
