"""DBSink: the engine's events as rows. The only engine-facing piece that knows about the DB."""

from __future__ import annotations

from db import store
from db.models import RunStatus
from engine.sinks import EventSink, RunTakenOver


class DBSink(EventSink):
    """progress_to: where live progress goes (the engine's heartbeat thread, control.heartbeat.Heartbeat.offer,
    which writes the newest with its next beat); without it live progress is not kept."""

    def __init__(self, url: str, run_id: int, progress_to=None):
        self.url, self.run_id, self.progress_to = url, run_id, progress_to
        self.owner: store.Owner | None = None  # this engine, once it marked the run started: every write checks it
        self._predictions: dict[int, dict[str, tuple]] = {}  # epoch -> split -> (pred, confidence), until written

    def on_status(self, status, **info):
        status = RunStatus(status)  # the engine's words for its states are the run statuses
        if status == RunStatus.RUNNING:
            url, run_id = self.url, self.run_id
            if not store.mark_started(url, run_id, info["pid"], info.get("device", ""), info.get("data_path")):
                raise RunTakenOver(f"run {run_id} is not this engine's to start: stopped, or another engine's")
            self.owner = store.Owner.this_process()
        else:
            store.mark_ended(self.url, self.run_id, status, info.get("error"), info.get("traceback"), owner=self.owner)

    def on_resume(self, from_epoch):
        store.truncate_after(self.url, self.run_id, from_epoch)

    def on_predictions(self, epoch, split, pred, confidence):
        self._predictions = {epoch: {**self._predictions.get(epoch, {}), split: (pred, confidence)}}

    def on_epoch_end(self, epoch, metrics, confusion):
        predictions = self._predictions.pop(epoch, None)
        self._predictions.clear()
        store.add_epoch(self.url, self.run_id, epoch, metrics, confusion, predictions=predictions, owner=self.owner)

    def on_checkpoint(self, epoch, kind, path, metric_name=None, metric_value=None):
        store.add_checkpoint(self.url, self.run_id, epoch, kind, path, metric_name, metric_value, owner=self.owner)

    def on_checkpoint_removed(self, path):
        store.remove_checkpoint(self.url, self.run_id, path, owner=self.owner)

    def on_checkpoints_due(self, epoch):
        store.check_owner(self.url, self.run_id, self.owner)

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
            owner=self.owner,
        )

    def on_tta(self, split, checkpoint, results):
        store.add_tta(self.url, self.run_id, split, checkpoint, results, owner=self.owner)

    def on_facts(self, facts):
        store.merge_run_facts(self.url, self.run_id, facts, owner=self.owner)

    def on_progress(self, progress):
        if self.progress_to is not None:  # no write here: the training loop never waits on the database
            self.progress_to(progress)

    def heartbeat(self) -> bool:
        return store.heartbeat(self.url, self.run_id, owner=self.owner)
