"""DBSink: the engine's events as rows. The only engine-facing piece that knows about the DB."""

from __future__ import annotations

from db import store
from db.models import RunStatus
from engine.sinks import EventSink


class DBSink(EventSink):
    def __init__(self, url: str, run_id: int):
        self.url, self.run_id = url, run_id

    def on_status(self, status, **info):
        status = RunStatus(status)  # the engine's words for its states are the run statuses
        if status == RunStatus.RUNNING:
            store.mark_started(self.url, self.run_id, info["pid"], info.get("device", ""), info.get("data_path"))
        else:
            store.mark_ended(self.url, self.run_id, status, info.get("error"), info.get("traceback"))

    def on_resume(self, from_epoch):
        store.truncate_after(self.url, self.run_id, from_epoch)

    def on_epoch_end(self, epoch, metrics, confusion):
        store.add_epoch(self.url, self.run_id, epoch, metrics, confusion)

    def on_checkpoint(self, epoch, kind, path, metric_name=None, metric_value=None):
        store.add_checkpoint(self.url, self.run_id, epoch, kind, path, metric_name, metric_value)

    def on_checkpoint_removed(self, path):
        store.remove_checkpoint(self.url, self.run_id, path)

    def on_evaluation(self, split, epoch, checkpoint, result):
        store.add_evaluation(
            self.url,
            self.run_id,
            split,
            epoch,
            checkpoint,
            result["accuracy"],
            result.get("loss"),
            result["per_class"],
            result["confusion"],
            result.get("predictions"),
        )

    def on_tta(self, split, checkpoint, results):
        store.add_tta(self.url, self.run_id, split, checkpoint, results)

    def heartbeat(self) -> bool:
        return store.heartbeat(self.url, self.run_id)
