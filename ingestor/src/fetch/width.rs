//! The span width of a range's `eth_getLogs` requests: learned from the node's answers
//! and refusals, and tried by one span at a time while no answer has proven it.

/// How spans are sized.
#[derive(Debug, Clone, Copy)]
pub struct SpanPolicy {
    /// Blocks in the first request.
    pub initial: u64,
    /// Never more blocks than this in one request.
    pub max: u64,
    /// Grow while a request returns fewer than half this many logs; shrink above it.
    pub target_logs: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// The span width shared by all requests of a range: what the node taught us so far.
#[derive(Debug)]
pub struct Width {
    current: u64,
    /// The most the node allows, once it said so (or `SpanPolicy::max`).
    ceiling: u64,
    /// The narrowest width refused lately: growth stays below it for a while, so a node
    /// that refuses without naming its limit is not asked the same thing every time.
    refused: Option<u64>,
    /// The widest span answered so far, and whether a span wider than that is in
    /// flight: a width no answer has tried yet is tried by one span at a time.
    answered: u64,
    probing: bool,
    /// Successes since the last refusal; after [`Width::FORGET_AFTER`] growth may probe again.
    successes: u32,
    target_logs: usize,
    /// Logs per block of the last few answers: growth stops at the width the densest of
    /// them would fill to the target, so a sparse stretch between dense ones does not
    /// send the next spans into the dense one twice too wide. (A long quiet stretch
    /// forgets them after a few answers and grows as before.)
    densities: std::collections::VecDeque<f64>,
    /// Requests in flight at once (`SpanPolicy::concurrency`).
    at_once: usize,
}

impl Width {
    /// Starts at `policy.initial`, never above `policy.max`.
    pub fn new(policy: &SpanPolicy) -> Self {
        let ceiling = policy.max.max(1);
        Self {
            current: policy.initial.clamp(1, ceiling),
            ceiling,
            refused: None,
            successes: 0,
            answered: 0,
            probing: false,
            target_logs: policy.target_logs.max(1),
            densities: std::collections::VecDeque::new(),
            at_once: policy.concurrency.max(1),
        }
    }

    /// Answers whose density bounds growth.
    const DENSITIES: usize = 8;

    /// Successes after which a refused width may be tried again (log density changes
    /// along the chain).
    pub const FORGET_AFTER: u32 = 8;

    /// Blocks the next request should span.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Requests a range may have in flight at once.
    pub fn at_once(&self) -> usize {
        self.at_once
    }

    /// The width of the next span to plan, or `None` while it must wait: a width wider
    /// than any answered so far is planned for one span at a time (a stretch without
    /// logs grows the width fast, and several spans that wide entering a dense stretch
    /// at once would each bring a flood of logs; one does, and its answer narrows the
    /// rest). `true` with the width: it is such a probe ([`Width::probed`] when done).
    pub(super) fn plan(&mut self) -> Option<(u64, bool)> {
        if self.current <= self.answered {
            Some((self.current, false))
        } else if !self.probing {
            self.probing = true;
            Some((self.current, true))
        } else {
            None
        }
    }

    /// A probe planned by [`Width::plan`] has ended, answered or not.
    pub(super) fn probed(&mut self) {
        self.probing = false;
    }

    /// A request of `blocks` returned `logs`: grow while answers are small, shrink when
    /// they are large, so that responses stay near the target.
    pub fn on_success(&mut self, blocks: u64, logs: usize) {
        self.answered = self.answered.max(blocks);
        self.successes += 1;
        if self.successes >= Self::FORGET_AFTER {
            self.refused = None;
        }
        if self.densities.len() == Self::DENSITIES {
            self.densities.pop_front();
        }
        self.densities.push_back(logs as f64 / blocks.max(1) as f64);
        let mut limit = self.refused.map_or(self.ceiling, |r| (r - 1).clamp(1, self.ceiling));
        if let Some(densest) = self.densities.iter().copied().reduce(f64::max)
            && densest > 0.0
        {
            let fills = (self.target_logs as f64 / densest) as u64;
            limit = limit.min(fills.max(self.current).max(1));
        }
        if logs < self.target_logs / 2 && blocks >= self.current {
            self.current = self.current.saturating_mul(2).min(limit).max(self.current.min(limit));
        } else if logs < self.target_logs && blocks >= self.current {
            // Between half the target and the target: to the width this answer's density
            // fills (a width stuck at 3 blocks of 1,000 logs against a 5,000 target asks
            // two requests where one would do).
            let fills = (blocks as u128 * self.target_logs as u128 / logs.max(1) as u128) as u64;
            self.current = fills.min(limit).max(self.current.min(limit));
        } else if logs > self.target_logs && blocks > 1 {
            // In proportion to the target (at least halved): one dense answer sets a
            // width near the target at once, instead of after several halvings.
            let proportional = (blocks as u128 * self.target_logs as u128 / logs as u128) as u64;
            self.current = proportional.min(blocks / 2).max(1);
        }
    }

    /// A probe's last block, asked alone, held `logs`: the density of what the probe
    /// reaches into. The width narrows to what that density fills to the target, and the
    /// answer says whether the probe's other `rest` blocks would then be more than about
    /// twice the target in one answer (more than the answer cap lets through), so are
    /// fetched in rounds at that width.
    pub(super) fn on_sample(&mut self, logs: usize, rest: u64) -> bool {
        if self.densities.len() == Self::DENSITIES {
            self.densities.pop_front();
        }
        self.densities.push_back(logs as f64);
        if logs == 0 {
            return false;
        }
        let fills = (self.target_logs / logs).max(1) as u64;
        self.current = self.current.min(fills);
        rest > fills.saturating_mul(2)
    }

    /// The node refused `blocks`: the next width, from its hint if it gave one. A named
    /// maximum becomes the ceiling for the rest of the run.
    pub fn on_refusal(
        &mut self,
        blocks: u64,
        suggested_blocks: Option<u64>,
        max_blocks: Option<u64>,
    ) -> u64 {
        if let Some(max) = max_blocks.filter(|&m| m > 0 && m < blocks) {
            self.ceiling = self.ceiling.min(max);
        }
        self.refused = Some(self.refused.map_or(blocks, |r| r.min(blocks)));
        self.successes = 0;
        let next = match (suggested_blocks, max_blocks) {
            (Some(s), _) if s < blocks => s,
            (_, Some(m)) if m < blocks => m,
            _ => blocks / 2,
        }
        .max(1);
        self.current = next.min(self.ceiling);
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SpanPolicy {
        SpanPolicy { initial: 1000, max: 100_000, target_logs: 1000, concurrency: 1 }
    }

    #[test]
    fn grows_while_answers_are_small_up_to_the_max() {
        let mut w = Width::new(&policy());
        for _ in 0..20 {
            let cur = w.current();
            w.on_success(cur, 10);
        }
        assert_eq!(w.current(), 100_000);
    }

    #[test]
    fn shrinks_when_answers_are_large() {
        let mut w = Width::new(&policy());
        w.on_success(1000, 5000);
        assert_eq!(w.current(), 200, "in proportion to the 1000-log target");
        w.on_success(200, 1500);
        assert_eq!(w.current(), 100, "at least halved");
    }

    #[test]
    fn refusal_uses_suggestion_then_named_max_then_halves() {
        let mut w = Width::new(&policy());
        assert_eq!(w.on_refusal(1000, Some(300), None), 300);
        assert_eq!(w.on_refusal(300, None, Some(100)), 100);
        // The named maximum is now a ceiling: growth stops there.
        for _ in 0..10 {
            w.on_success(w.current(), 0);
        }
        assert_eq!(w.current(), 100);
        assert_eq!(w.on_refusal(100, None, None), 50);
        assert_eq!(w.on_refusal(1, None, None), 1);
    }

    #[test]
    fn growth_stays_below_a_refused_width_then_probes_again() {
        let mut w = Width::new(&policy());
        assert_eq!(w.on_refusal(1000, None, None), 500);
        for _ in 0..Width::FORGET_AFTER - 1 {
            w.on_success(w.current(), 0);
            assert!(w.current() < 1000, "{}", w.current());
        }
        w.on_success(w.current(), 0);
        w.on_success(w.current(), 0);
        assert!(w.current() >= 1000, "probes again after enough successes: {}", w.current());
    }

    #[test]
    fn a_width_no_answer_has_tried_is_one_span_at_a_time() {
        let mut w = Width::new(&policy());
        assert_eq!(w.plan(), Some((1000, true)), "the first span probes");
        assert_eq!(w.plan(), None, "the others wait for its answer");
        w.on_success(1000, 10);
        w.probed();
        assert_eq!(w.current(), 2000, "an empty answer doubles the width");
        assert_eq!(w.plan(), Some((2000, true)), "one span tries the new width");
        assert_eq!(w.plan(), None);
        w.on_success(2000, 5000);
        w.probed();
        // A dense answer narrows the width below what was answered: all may go.
        assert_eq!(w.plan(), Some((400, false)));
        assert_eq!(w.plan(), Some((400, false)));
    }

    #[test]
    fn growth_stops_where_the_densest_recent_answer_would_fill_the_target() {
        let mut w = Width::new(&SpanPolicy { initial: 10, ..policy() });
        // 10 blocks of 100 logs each: the target (1000) is reached at 10 blocks.
        w.on_success(10, 1000);
        assert_eq!(w.current(), 10);
        // A sparse stretch: 10 blocks with 40 logs would double the width, but the dense
        // answer before it says 10 blocks already hold the target.
        w.on_success(10, 40);
        assert_eq!(w.current(), 10);
        // Once the dense answers are forgotten, sparse ones grow it again.
        for _ in 0..Width::DENSITIES {
            w.on_success(w.current(), 40);
        }
        assert!(w.current() > 10, "{}", w.current());
        // Empty answers say nothing of density: they grow the width as before, and a
        // quiet stretch after a dense one forgets it.
        let mut fresh = Width::new(&SpanPolicy { initial: 10, ..policy() });
        fresh.on_success(10, 0);
        assert_eq!(fresh.current(), 20);
        w.on_success(w.current(), 5000);
        let dense = w.current();
        for _ in 0..Width::DENSITIES + 3 {
            w.on_success(w.current(), 0);
        }
        assert!(w.current() > dense * 4, "{} after {dense}", w.current());
    }

    #[test]
    fn an_answer_between_half_the_target_and_the_target_grows_to_what_fills_it() {
        let mut w = Width::new(&SpanPolicy { initial: 3, ..policy() });
        // 200 logs a block: 5 blocks fill the 1000-log target.
        w.on_success(3, 600);
        assert_eq!(w.current(), 5);
        w.on_success(5, 1000);
        assert_eq!(w.current(), 5, "at the target it stays");
    }

    #[test]
    fn a_probes_last_block_narrows_it_before_the_span_is_asked() {
        let fresh = || Width::new(&SpanPolicy { initial: 160, ..policy() });
        // An empty block says nothing: the span goes as planned.
        let mut w = fresh();
        assert!(!w.on_sample(0, 159));
        assert_eq!(w.current(), 160);
        // 100 logs a block: 10 blocks fill the 1000-log target, and the other 159 blocks
        // would be an answer of 15,900: they go in rounds at 10.
        let mut w = fresh();
        assert!(w.on_sample(100, 159));
        assert_eq!(w.current(), 10);
        // 5 logs a block: the other 159 blocks are 795 logs, one answer.
        let mut w = fresh();
        assert!(!w.on_sample(5, 159));
        assert_eq!(w.current(), 160);
        // The sampled density bounds growth as an answer's does: 200 blocks fill it.
        w.on_success(160, 10);
        assert_eq!(w.current(), 200);
    }

    #[test]
    fn a_suggestion_wider_than_asked_is_ignored() {
        let mut w = Width::new(&policy());
        assert_eq!(w.on_refusal(1000, Some(5000), None), 500);
    }
}
