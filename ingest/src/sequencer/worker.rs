//! The sequencer's worker thread: it takes exports in arrival order, prepares a group (fold,
//! WAL records), hands it to the writer thread, applies the last durable group to the
//! aggregator, answers every export of it, and takes checkpoints between groups.

use super::*;

pub(super) struct Worker {
    pub(super) rx: Receiver<Job>,
    pub(super) cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    pub(super) mapper: Mapper,
    pub(super) spec: WindowSpec,
    pub(super) agg: SharedAggregator,
    /// The WAL writer while it is here (not with the logger, not lost).
    pub(super) wal: Option<Box<WalWriter>>,
    /// Writes WAL groups; `None` without a WAL.
    pub(super) logger: Option<Logger>,
    /// Writes checkpoints; `None` without a WAL.
    pub(super) checkpoints: Option<Checkpoints>,
    /// Bytes the WAL holds, with the group being written (the cap is checked against it).
    pub(super) wal_total: u64,
    /// The WAL's size cap.
    pub(super) wal_max: u64,
    /// An empty group buffer to build the next group in.
    pub(super) spare: Vec<u8>,
    pub(super) clock: SharedClock,
    pub(super) metrics: Metrics,
    pub(super) watermark: Watermark,
    pub(super) wal_fault: WalFault,
    pub(super) wal_full: WalFull,
    pub(super) max_wait: Duration,
}

/// The checkpoint thread and when the sequencer last handed it a checkpoint.
pub(super) struct Checkpoints {
    pub(super) thread: Checkpointer,
    pub(super) every_ms: i64,
    /// When the last checkpoint's state was taken (clock ms).
    pub(super) taken_ms: i64,
    /// When the state of the newest durable checkpoint was taken.
    pub(super) durable_ms: i64,
    /// A checkpoint is being written (one at a time).
    pub(super) writing: bool,
    /// Segments before this may go, once the writer is here.
    pub(super) drop_before: Option<u64>,
}

/// A group of exports, folded and encoded for the WAL, on its way to being durable, applied
/// and answered.
struct Prepared {
    now: i64,
    exports: Vec<Export>,
    replies: Vec<oneshot::Sender<Result<Applied>>>,
    /// Whether each export could be folded, or why it is refused.
    mapped: Vec<Result<()>>,
    /// Whether each export's record is in the group (the WAL's cap may leave some out).
    logged: Vec<bool>,
    /// The group's WAL records.
    records: Vec<u8>,
    /// Their bytes.
    bytes: u64,
    /// The logger has the group.
    writing: bool,
    /// The WAL write failed: every logged export is refused with the retryable answer.
    unwritten: bool,
}

/// The thread that writes and syncs WAL groups, so the sequencer prepares the next group and
/// applies the last one meanwhile. The writer itself travels there and back, so it has one
/// owner at a time and its file operations keep their order.
pub(super) struct Logger {
    to: Sender<Box<WalWriter>>,
    back: Receiver<(Box<WalWriter>, std::result::Result<(), wal::WalError>)>,
}

impl Logger {
    pub(super) fn start() -> Result<Self> {
        let (to, rx) = crossbeam_channel::bounded::<Box<WalWriter>>(1);
        let (tx, back) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("cellpilot-wal".into())
            .spawn(move || {
                for mut w in rx {
                    let r = catch_unwind(AssertUnwindSafe(|| w.commit()))
                        .unwrap_or_else(|p| Err(wal::WalError::Panicked(panic_message(p.as_ref()))));
                    if tx.send((w, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the WAL writer: {e}").into()))?;
        Ok(Self { to, back })
    }
}

impl Worker {
    pub(super) fn run(mut self) {
        // The group being written; the next one is prepared meanwhile, and this one applied
        // while the next is written.
        let mut pending: Option<Prepared> = None;
        loop {
            let jobs = if pending.is_some() {
                self.more(Vec::new())
            } else {
                match self.rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(j) => self.more(vec![j]),
                    Err(RecvTimeoutError::Timeout) => {
                        self.maintain();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            // Exports fail alone inside `prepare` and `apply`; this is the last line, for their
            // own code: the group's replies are dropped (the clients hear UNAVAILABLE).
            let mut next = if jobs.is_empty() { None } else { self.guarded(|w| w.prepare(jobs)).flatten() };
            if let Some(mut p) = pending.take() {
                self.await_write(&mut p);
                // Sealing a segment and taking a checkpoint need every group written applied
                // and the writer here: the next group waits for them.
                let due = self.maintenance_due();
                if !due && let Some(mut n) = next.take() {
                    self.start_write(&mut n);
                    pending = Some(n);
                }
                self.guarded(|w| w.apply(p));
                if due {
                    self.maintain();
                }
            } else if self.maintenance_due() {
                self.maintain();
            }
            if let Some(mut n) = next {
                self.start_write(&mut n);
                pending = Some(n);
            }
        }
        if let Some(w) = self.wal.as_mut()
            && let Err(e) = w.commit()
        {
            tracing::error!(error = %e, "final WAL sync failed");
        }
        self.final_checkpoint();
    }

    /// On shutdown, a checkpoint of everything applied, so the next start replays nothing.
    fn final_checkpoint(&mut self) {
        let Some(c) = self.checkpoints.as_mut() else { return };
        if c.writing
            && let Ok(done) = c.thread.back.recv()
        {
            self.note_checkpoint(done);
        }
        if let Some(c) = self.checkpoints.as_mut() {
            c.taken_ms = i64::MIN;
        }
        self.maintain();
        if let Some(c) = self.checkpoints.as_mut()
            && c.writing
            && let Ok(done) = c.thread.back.recv()
        {
            self.note_checkpoint(done);
            self.maintain();
        }
    }

    /// Notes a checkpoint the writer finished.
    fn note_checkpoint(&mut self, done: checkpoint::Done) {
        let Some(c) = self.checkpoints.as_mut() else { return };
        c.writing = false;
        match done.result {
            Ok(w) => {
                c.durable_ms = c.taken_ms;
                c.drop_before = Some(w.keep_from);
                self.metrics.checkpoint_bytes.set(w.bytes as i64);
                self.metrics.checkpoints.with_label_values(&["ok"]).inc();
                tracing::debug!(seq = done.seq, bytes = w.bytes, "checkpoint written");
            }
            Err(e) => {
                self.metrics.checkpoints.with_label_values(&["failed"]).inc();
                tracing::error!(seq = done.seq, error = %e, "writing a checkpoint failed; the WAL is kept until one succeeds");
            }
        }
    }

    /// `jobs` and whatever else is queued, up to a group.
    fn more(&self, mut jobs: Vec<Job>) -> Vec<Job> {
        while jobs.len() < GROUP {
            match self.rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        jobs
    }

    /// Runs `f`, counting and logging a panic.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(t) => Some(t),
            Err(p) => {
                self.metrics.ingest_panics.inc();
                tracing::error!(panic = %panic_message(p.as_ref()), "an export group panicked; it was refused");
                None
            }
        }
    }

    /// Answers exports that waited too long, folds the rest and encodes their WAL records.
    fn prepare(&mut self, jobs: Vec<Job>) -> Option<Prepared> {
        // Waited too long: its spans would land after their windows close and be refused as
        // late in a partial success, which exporters do not retry. The retry hint they do.
        let (jobs, stale): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.queued_at.elapsed() <= self.max_wait);
        if !stale.is_empty() {
            tracing::warn!(exports = stale.len(), max_wait = ?self.max_wait, "exports waited too long for the sequencer; answered with the retry hint");
            self.metrics.ingest_overloaded.with_label_values(&["queue_wait"]).inc_by(stale.len() as u64);
        }
        for j in stale {
            let _ = j.reply.send(Err(Error::Overloaded { retry_after: RETRY_AFTER }));
        }
        if jobs.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let mut records = std::mem::take(&mut self.spare);
        let (mut exports, mut replies, mut mapped, mut logged) =
            (Vec::with_capacity(jobs.len()), Vec::with_capacity(jobs.len()), Vec::new(), Vec::new());
        let mut full = None;
        for Job { export, raw, reply, .. } in jobs {
            let (mapper, spec) = (&self.mapper, self.spec);
            let folded = catch_unwind(AssertUnwindSafe(|| export.fold(mapper, spec, now)))
                .unwrap_or_else(|p| Err(self.panicked(p)));
            let (export, m) = match folded {
                Ok(e) => (e, Ok(())),
                Err(e) => (Export::Logs(ExportLogsServiceRequest::default()), Err(e)),
            };
            let log = m.is_ok()
                && (self.logger.is_none() || {
                    let mut scratch = Vec::new();
                    let (kind, bytes) = export.record(&raw, &mut scratch);
                    let fits = wal::fits(self.wal_total + records.len() as u64, bytes.len(), self.wal_max);
                    if !fits {
                        full = Some(self.wal_total + records.len() as u64);
                    }
                    fits && wal::append_record(&mut records, kind, now, bytes).is_ok()
                });
            exports.push(export);
            replies.push(reply);
            mapped.push(m);
            logged.push(log);
        }
        self.note_full(full, logged.iter().filter(|l| !**l).count());
        let bytes = records.len() as u64;
        Some(Prepared { now, exports, replies, mapped, logged, records, bytes, writing: false, unwritten: false })
    }

    /// Says (on `/readyz`) that the WAL holds `full` bytes, too many for another export, or
    /// that it has room again.
    fn note_full(&self, full: Option<u64>, refused: usize) {
        let mut state = self.wal_full.lock().unwrap_or_else(|e| e.into_inner());
        match full {
            Some(held) => {
                self.metrics.ingest_overloaded.with_label_values(&["wal_full"]).inc_by(refused as u64);
                if state.is_none() {
                    tracing::warn!(
                        bytes = held,
                        max = self.wal_max,
                        "WAL full: exports get the retry hint until a checkpoint frees it"
                    );
                }
                *state = Some(format!(
                    "wal full: the WAL holds {} MiB of storage.wal_max_size {} MiB; exports are answered 429 / UNAVAILABLE with a retry hint until the next checkpoint frees it",
                    held >> 20,
                    self.wal_max >> 20
                ));
            }
            None => *state = None,
        }
    }

    /// Hands `p`'s records to the logger (or writes them here if it is gone).
    fn start_write(&mut self, p: &mut Prepared) {
        if self.logger.is_none() {
            return;
        }
        let Some(mut w) = self.wal.take() else {
            // A writer lost to a logger that stopped: nothing can be made durable.
            p.unwritten = true;
            return;
        };
        w.set_group(std::mem::take(&mut p.records));
        self.wal_total = w.total_bytes();
        let Some(logger) = self.logger.as_ref() else { return };
        match logger.to.send(w) {
            Ok(()) => p.writing = true,
            Err(crossbeam_channel::SendError(mut w)) => {
                let r = w.commit();
                self.written(w, r, p);
            }
        }
    }

    /// Waits until the logger has written `p`.
    fn await_write(&mut self, p: &mut Prepared) {
        if !std::mem::take(&mut p.writing) {
            return;
        }
        match self.logger.as_ref().map(|l| l.back.recv()) {
            Some(Ok((w, r))) => self.written(w, r, p),
            _ => p.unwritten = true,
        }
    }

    /// Takes the writer back after it wrote `p`, with what the write did.
    fn written(&mut self, mut w: Box<WalWriter>, r: std::result::Result<(), wal::WalError>, p: &mut Prepared) {
        let mut fault = self.wal_fault.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(()) => {
                *fault = None;
                self.metrics.wal_written.inc_by(p.bytes);
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL write failed; the group is refused with the retryable answer");
                self.metrics.wal_failures.inc();
                *fault = Some((cellpilot_core::clock::monotonic(), e.to_string()));
                p.unwritten = true;
            }
        }
        drop(fault);
        self.spare = w.take_buffer();
        self.wal_total = w.total_bytes();
        self.metrics.wal_bytes.set(self.wal_total as i64);
        self.wal = Some(w);
    }

    /// Applies a durable group in order and answers it.
    fn apply(&mut self, p: Prepared) {
        let Prepared { now, exports, replies, mapped, logged, unwritten, .. } = p;
        let durable_before = (self.watermark)();
        let mut agg = self.agg.lock();
        let mut results = Vec::with_capacity(replies.len());
        for ((m, logged), export) in mapped.into_iter().zip(logged).zip(&exports) {
            results.push(match m {
                Err(e) => Err(e),
                Ok(()) if unwritten => Err(unavailable()),
                Ok(()) if !logged => Err(Error::Overloaded { retry_after: RETRY_AFTER }),
                Ok(()) => match catch_unwind(AssertUnwindSafe(|| match export {
                    Export::Spans(b, _) => Ok(Applied {
                        outcome: agg.apply_spans(b, now, durable_before),
                        ignored: b.ignored,
                        unusable: Vec::new(),
                        truncated: b.truncated,
                    }),
                    _ => {
                        let obs = export.map(&self.mapper)?;
                        let outcome = agg.apply(&obs, now, durable_before);
                        Ok::<_, Error>(Applied {
                            outcome,
                            ignored: obs.ignored,
                            unusable: obs.rejected,
                            truncated: obs.truncated,
                        })
                    }
                })) {
                    // Logged already: recovery meets the same panic and quarantines the record.
                    Err(p) => Err(self.panicked(p)),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(applied)) => {
                        self.metrics.ingest_logs.inc_by(export.log_records() as u64);
                        if let (Export::Logs(req), Some(sink)) = (export, &self.cutovers) {
                            let found = crate::logs::cutovers(req);
                            for r in &found.reported {
                                sink.reported(&r.cell, r.started_ms, r.completed_ms);
                            }
                            malformed_cutovers(found.malformed);
                        }
                        Ok(applied)
                    }
                },
            });
        }
        self.metrics.series_live.set(agg.live_series() as i64);
        self.metrics.windows_open.set(agg.open_windows() as i64);
        drop(agg);
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }

    /// The answer to an export whose mapping or aggregation panicked: it fails alone.
    fn panicked(&self, p: Box<dyn std::any::Any + Send>) -> Error {
        self.metrics.ingest_panics.inc();
        let detail = format!("an export panicked while being mapped or applied: {}", panic_message(p.as_ref()));
        Error::Internal(detail.into())
    }

    /// Whether a segment is to be sealed, a checkpoint taken or segments dropped (each needs
    /// the writer here with every group written applied). Notes finished checkpoints.
    fn maintenance_due(&mut self) -> bool {
        let now = self.clock.now_ms();
        while let Some(done) = self.checkpoints.as_ref().and_then(|c| c.thread.back.try_recv().ok()) {
            self.note_checkpoint(done);
        }
        let Some(c) = self.checkpoints.as_mut() else { return false };
        self.metrics.checkpoint_age.set((now - c.durable_ms).max(0) as f64 / 1000.0);
        c.drop_before.is_some()
            || (!c.writing && now.saturating_sub(c.taken_ms) >= c.every_ms)
            || self.wal.as_ref().is_some_and(|w| w.due_for_rotation())
    }

    /// Seals a full segment, takes a due checkpoint and drops segments checkpoints made
    /// redundant (only while the writer is here and every group written is applied).
    fn maintain(&mut self) {
        let due = self.maintenance_due();
        let (Some(w), Some(c)) = (self.wal.as_mut(), self.checkpoints.as_mut()) else { return };
        if !due {
            return;
        }
        if w.due_for_rotation()
            && let Err(e) = w.rotate()
        {
            tracing::error!(error = %e, "sealing a WAL segment failed");
        }
        let now = self.clock.now_ms();
        if !c.writing && now.saturating_sub(c.taken_ms) >= c.every_ms {
            // The checkpoint holds everything logged before the segment it names: a fresh one,
            // even when the active segment is empty (idle, or a failed group was cut back), so
            // each checkpoint and its closed-row file get a number of their own.
            if w.rotate().is_ok() {
                let (state, rows) = self.agg.checkpoint();
                let job = checkpoint::Job { seq: w.active_seq(), state, rows, persisted_until: (self.watermark)() };
                if c.thread.send(job) {
                    c.writing = true;
                } else {
                    tracing::error!("the checkpoint writer has stopped; the WAL is kept");
                }
                c.taken_ms = now;
            } else {
                tracing::error!("sealing a WAL segment for a checkpoint failed; trying again next time");
                c.taken_ms = now;
            }
        }
        if let Some(seq) = c.drop_before.take() {
            match w.drop_before(seq) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, "dropped WAL segments checkpoints hold"),
                Err(e) => tracing::error!(error = %e, "dropping WAL segments failed"),
            }
        }
        self.wal_total = w.total_bytes();
        self.metrics.wal_bytes.set(self.wal_total as i64);
        self.metrics.wal_segments.set(w.segments() as i64);
    }
}
