"""The callbacks of a training run: its time budget and progress record, a stop on a
non-finite loss, TensorBoard summaries; and the one-line messages of a run that stops early."""

import math
import signal
import threading
import time

import keras
import tensorflow as tf

from tf_autoseg import visualize
from tf_autoseg.evaluation import metrics
from tf_autoseg.training import checkpoints
from tf_autoseg.training import runs


class TimeBudget(keras.callbacks.Callback):
    """Counts training time over resumes; stops training once `minutes` of it are spent.

    `offset`: the seconds recorded at the checkpoint the run resumes from. At the end of each
    epoch (checkpoint interval) the seconds so far, the loss and the mutual information are
    recorded (`runs.record_progress`), so a run resumed after its last step reports them.
    """

    clock = staticmethod(time.monotonic)  # replaced in tests

    def __init__(self, minutes, offset, run_dir, is_chief=True):
        super().__init__()
        self.limit = None if minutes is None else 60.0 * minutes
        self.offset, self.run_dir, self.is_chief = offset, run_dir, is_chief
        self.started = None

    def seconds(self):
        """Training seconds so far, this process's and those recorded before it."""
        return self.offset + (0.0 if self.started is None else self.clock() - self.started)

    def on_train_begin(self, logs=None):
        self.started = self.clock()

    def on_train_end(self, logs=None):
        self.offset, self.started = self.seconds(), None

    def on_train_batch_end(self, batch, logs=None):
        if self.limit is not None and self.seconds() >= self.limit:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.is_chief:
            step = int(self.model.optimizer.iterations)
            runs.record_progress(
                self.run_dir, step, train_seconds=self.seconds(),
                loss=self.model.loss_tracker.result(),
                mutual_information=self.model.mi_tracker.result(),
            )  # fmt: skip


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, with where the same command resumes."""


class StopOnCtrlC(keras.callbacks.Callback):
    """Ctrl-C stops training at the end of the step in progress; a second one at once.

    Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives: inside
    tf.data's iterator or an object's `__del__` it can be swallowed ("Exception ignored in
    ...") and training goes on (seen in the test suite: a run went on for 120 s after its
    Ctrl-C). Here the signal only sets `requested`, which the next step's end reads; the
    caller raises `Interrupted` once `fit` returns. Installed from the main thread only, and
    not where SIGINT is ignored (a run started with `nohup ... &` keeps ignoring it).
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def on_train_begin(self, logs=None):
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            return
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # the second Ctrl-C: the user does not want to wait
            raise KeyboardInterrupt
        self.requested = True

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.restore()

    def restore(self):
        """Puts SIGINT's handler back (also after `fit` raised)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def resume_note(model, run_dir):
    step = int(model.optimizer.iterations)
    found = checkpoints.checkpoints(run_dir)
    if not found:
        return f"stopped at step {step}; no checkpoint yet: the same command starts again."
    last, path = found[-1]
    return f"stopped at step {step}; the same command resumes from step {last} ({path})."


def op_error_reason(message):
    """The line of a TensorFlow op error that says what failed (not where in the graph)."""
    lines = [line.strip() for line in message.splitlines()]
    said = [
        line for line in lines
        if line and not line.endswith(":") and not line.startswith(("Detected at node", "File ", "[[", "{{"))
    ]  # fmt: skip
    return (said[-1] if said else " ".join(lines)).rstrip(".")


class Diverged(ValueError):
    """A training run whose loss stopped being finite."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops a diverged run at once: no checkpoint, model or export of a non-finite loss."""

    def __init__(self, run_dir, learning_rate):
        super().__init__()
        self.run_dir, self.learning_rate = run_dir, learning_rate

    def on_train_batch_end(self, batch, logs=None):
        loss = float(self.model.loss_tracker.result())
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations)
            found = checkpoints.checkpoints(self.run_dir)
            kept = f"its last good checkpoint is {found[-1][1]}" if found else "no checkpoint"
            raise Diverged(
                f"training diverged: the loss is {loss} at step {step}; nothing was exported "
                f"and {kept}. Lower --learning_rate (now {self.learning_rate:g}) and train in "
                "a new --run_dir."
            )


class SummaryCallback(keras.callbacks.Callback):
    """TensorBoard: loss and MI every `--log_every` steps; at each checkpoint, images
    (input, prediction, ground truth) and evaluation accuracy and mIoU.

    The images come from the evaluation set when there is one (with their
    ground truth), else from the training set.
    """

    def __init__(self, log_dir, train, evaluation_set, num_classes, *, images=4, log_every=10,
                 eval_batches=0):  # fmt: skip
        """`images` shown, `log_every` steps between loss points, `eval_batches` scored at
        each checkpoint (0: 4), with `num_classes` classes."""
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        source = evaluation_set if evaluation_set is not None else train
        sample = next(iter(source.unbatch().batch(images).take(1)))
        self.images, self.labels = sample if evaluation_set is not None else (sample, None)
        self.evaluation_set = evaluation_set
        self.num_classes = num_classes
        self.eval_batches = eval_batches or 4
        self.log_every = log_every

    def on_train_batch_end(self, batch, logs=None):
        # The trackers, not `logs`: step outputs are rank-1 under some strategies.
        step = int(self.model.optimizer.iterations)
        if step % self.log_every == 0:
            with self.writer.as_default(step=step):
                tf.summary.scalar("train/loss", self.model.loss_tracker.result())
                tf.summary.scalar("train/mutual_information", self.model.mi_tracker.result())

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations)
        rgb = self.images[..., :3]
        with self.writer.as_default(step=step):
            tf.summary.image("input", rgb, max_outputs=len(rgb))
            predicted = self.model.predict_labels(self.images)
            tf.summary.image("prediction", visualize.overlay(rgb, predicted), max_outputs=len(rgb))
            if self.labels is not None:
                truth = visualize.colorize(self.labels)
                tf.summary.image("ground_truth", truth, max_outputs=len(rgb))
                confusion = metrics.model_confusion(
                    self.model, self.evaluation_set.take(self.eval_batches), self.num_classes
                )
                result = metrics.protocol(confusion)
                tf.summary.scalar("eval/pixel_accuracy", result["pixel_accuracy"])
                tf.summary.scalar("eval/mean_iou", result["mean_iou"])
        self.writer.flush()
