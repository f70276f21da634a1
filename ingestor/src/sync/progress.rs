//! How far a long range has come, for people: a redrawn status line on a terminal, or a
//! log record every 5 s (blocks, rate, transfers, ETA).

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tracing::info;

/// The progress of one range.
#[derive(Debug)]
pub(super) struct Progress {
    range: RangeInclusive<u64>,
    started: Instant,
    last_log: Instant,
    done_to: u64,
    transfers: usize,
    /// Redraw a status line on the terminal (stderr is one, logs are text).
    draw: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    pub(super) fn new(range: RangeInclusive<u64>, draw: bool) -> Self {
        let now = Instant::now();
        Self {
            done_to: range.start().saturating_sub(1),
            range,
            started: now,
            last_log: now,
            transfers: 0,
            draw,
            last_draw: None,
        }
    }

    /// Blocks up to `to` are done, with `transfers` more transfers.
    pub(super) fn advance(&mut self, to: u64, transfers: usize) {
        self.done_to = to;
        self.transfers += transfers;
        if self.draw {
            if self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                self.last_draw = Some(Instant::now());
                self.redraw(false);
            }
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            self.log("progress");
        }
    }

    /// The range is done: a last line.
    pub(super) fn finish(&self) {
        if self.range.end() > self.range.start() {
            if self.draw {
                self.redraw(true);
            }
            self.log("range indexed");
        }
    }

    /// Redraws the status line in place: bar, percent, blocks, rate, transfers, ETA.
    #[allow(clippy::print_stderr, reason = "a terminal status line, not a log record")]
    fn redraw(&self, last: bool) {
        let total = self.range.end() - self.range.start() + 1;
        let done = self.done_to + 1 - self.range.start();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { ((total - done) as f64 / rate) as u64 } else { 0 };
        let filled = (done * 30 / total.max(1)) as usize;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(30 - filled));
        eprint!(
            "\r\x1b[2K[{bar}] {:5.1}%  block {}/{}  {rate:.0} blocks/s  {} transfers ({:.0}/s)  ETA {}m{:02}s{}",
            done as f64 * 100.0 / total as f64,
            self.done_to,
            self.range.end(),
            self.transfers,
            self.transfers as f64 / secs,
            eta / 60,
            eta % 60,
            if last { "\n" } else { "" }
        );
    }

    fn log(&self, what: &str) {
        let total = self.range.end() - self.range.start() + 1;
        let done = self.done_to + 1 - self.range.start();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { (total - done) as f64 / rate } else { f64::INFINITY };
        info!(
            block = self.done_to,
            to = *self.range.end(),
            percent = format!("{:.1}", done as f64 * 100.0 / total as f64),
            blocks_per_s = format!("{rate:.0}"),
            transfers = self.transfers,
            transfers_per_s = format!("{:.0}", self.transfers as f64 / secs),
            eta_s = format!("{eta:.0}"),
            "{what}"
        );
    }
}
