"""Live progress of a whole run: jobs done of total, epochs, elapsed time and an ETA from the
wall time per epoch measured so far, and one line per finished job.

On a terminal a rich progress bar stays at the bottom with the lines above it, and in a Jupyter
notebook the same bar as a widget (rich draws it with ipywidgets, where installed); otherwise (a
log file, a pipe, CI, a notebook without ipywidgets) plain lines: one per epoch, one per finished
job with the run's totals.

Quiet (`augcompare run --quiet`): the bar where one can be drawn, else the one status line on
stderr (experiments.console) rewritten with the totals; no line per epoch or per job, except a
job that failed.
"""

import importlib.util
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from augcompare.experiments import console as status_line


def duration(seconds):
    """'1h02m', '3m05s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def live_bar(console):
    """True where a rich console can show a live bar: a terminal, or a notebook with ipywidgets
    (without it rich only warns, so plain lines show the progress there)."""
    return console.is_terminal or (console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None)


class RunProgress:
    """Counts jobs and epochs of a run and shows them.

    total_epochs: the epochs the planned jobs will train (reduced when a job stops early or
    fails); format_primary(record) -> text of the job's primary metric; clock: seconds, monotonic;
    quiet: no line per epoch or per finished job (a failed job's line stays).
    """

    def __init__(self, jobs, total_epochs, epochs_done, format_primary, stream=None, clock=time.monotonic,
                 quiet=False):
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.jobs_total, self.jobs_done = jobs, 0
        self.epochs_total, self.epochs_done = total_epochs, epochs_done
        self.format_primary = format_primary
        self.clock = clock
        self.quiet = quiet
        self.started = clock()
        self.epoch_seconds = []  # of the epochs this process saw end
        self.bar = None
        if live_bar(self.console):
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                                console=self.console, transient=True)
            self.task = self.bar.add_task("run", total=max(total_epochs, 1), completed=epochs_done, status="")
            self.bar.start()
            self._refresh()

    def add_jobs(self, jobs, epochs):
        """More jobs planned (the second stage of a two-stage design)."""
        self.jobs_total += jobs
        self.epochs_total += epochs
        self._refresh()

    def eta(self):
        """Seconds left: the epochs still to train x the wall time since the run started per epoch
        trained. That holds what epoch_seconds leaves out (validation, test evaluation, a job's
        start-up) and the concurrency the executor really reaches; it starts high (the first
        epoch carries the compilation) and settles as epochs end. None before any epoch."""
        if not self.epoch_seconds:
            return None
        remaining = max(0, self.epochs_total - self.epochs_done)
        return remaining * (self.clock() - self.started) / len(self.epoch_seconds)

    def status(self):
        eta = self.eta()
        return (f"{self.jobs_done}/{self.jobs_total} jobs, {self.epochs_done}/{self.epochs_total} epochs, "
                f"{duration(self.clock() - self.started)} elapsed"
                + (f", ETA {duration(eta)}" if eta is not None else ""))

    def _refresh(self):
        if self.bar is not None:
            self.bar.update(self.task, total=max(self.epochs_total, 1), completed=self.epochs_done,
                            status=self.status())
        elif self.quiet and self.jobs_total:
            status_line.status(f"  {self.status()}")

    def line(self, text):
        if self.quiet:
            status_line.end()  # a line of its own, not glued to the status line
        self.console.print(text, markup=False)

    def epoch(self, row, epochs, stopped_early=False):
        """A job finished an epoch (row of history.csv) of its `epochs`."""
        self.epochs_done += 1
        self.epoch_seconds.append(row["epoch_seconds"])
        if self.bar is None and not self.quiet:
            self.line(f"  {row['arm']:>12s} seed {row['seed']}  epoch {row['epoch']:>3d}/{epochs}  "
                      f"loss {row['loss']:.3f} acc {row['accuracy']:.3f}  "
                      f"val_loss {row['val_loss']:.3f} val_acc {row['val_accuracy']:.3f}  "
                      f"({row['epoch_seconds']:.1f} s)" + ("  early stop" if stopped_early else ""))
        self._refresh()

    def job_done(self, record, skipped_epochs=0):
        """A job ended; skipped_epochs: planned epochs it will not train (early stop, failure)."""
        self.jobs_done += 1
        self.epochs_total -= skipped_epochs
        if record["status"] == "failed":
            text = f"FAILED: {record['reason']}; the other jobs go on"
        else:
            text = self.format_primary(record) + ("  (stopped early)" if record["status"] == "stopped_early" else "")
        if not self.quiet or record["status"] == "failed":
            self.line(f"job {record['arm']} seed {record['seed']} done: {text}  {record.get('seconds', 0):.1f} s  "
                      f"[{self.status()}]")
        self._refresh()

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.quiet:
            status_line.end()
