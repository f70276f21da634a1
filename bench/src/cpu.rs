//! Which process did the work: CPU seconds per program (postgres, anvil, ingestor) over a
//! stretch of time, from /proc. Samples are taken repeatedly because the ingestor's
//! database backends end with it; each process counts from its first to its last sample.

use std::collections::HashMap;

/// CPU time of the processes of interest, sampled over time.
#[derive(Debug, Default)]
pub(crate) struct CpuWatch {
    /// pid → (program, ticks at first sight, ticks at last sight).
    seen: HashMap<u32, (String, u64, u64)>,
    started: bool,
}

/// The programs counted.
const PROGRAMS: [&str; 3] = ["postgres", "anvil", "ingestor"];

impl CpuWatch {
    /// Reads every process's CPU ticks now. Processes that start after the first sample
    /// count from zero.
    pub(crate) fn sample(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ..." — comm may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let Some(program) = PROGRAMS.iter().find(|p| comm.starts_with(*p)) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after "state".
            let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            let first = if self.started { 0 } else { ticks };
            let e = self.seen.entry(pid).or_insert((program.to_string(), first, ticks));
            e.2 = ticks;
        }
        self.started = true;
    }

    /// CPU seconds per program between the first and the last sample.
    pub(crate) fn seconds(&self) -> Vec<(String, f64)> {
        // Linux reports stat times in USER_HZ, 100 on every mainstream architecture.
        const TICKS_PER_SECOND: f64 = 100.0;
        PROGRAMS
            .iter()
            .map(|p| {
                let ticks: u64 = self
                    .seen
                    .values()
                    .filter(|(program, ..)| program == p)
                    .map(|(_, first, last)| last.saturating_sub(*first))
                    .sum();
                (p.to_string(), ticks as f64 / TICKS_PER_SECOND)
            })
            .collect()
    }
}
