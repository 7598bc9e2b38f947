//! Cron schedules: one timer for all schedules.
//!
//! Jobs sit in buckets keyed by their next fire time; a single task sleeps
//! until the earliest one (or until the set of schedules changes), hands every
//! tick that is due to the node (a [`Tick`]) and computes each schedule's next
//! time from its schedule, not from when it happened to wake, so fire times
//! do not drift. The scheduler knows nothing of what a tick runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use tokio::sync::Notify;

use wasmatic_state::now_ms;
use wasmatic_state::ScheduleRecord;

/// A schedule as the node shows it.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub input: String,
    pub next: Option<u64>,
    pub created_at: u64,
}

/// Parses a new cron line of 5 fields, or of 6 with seconds first; one
/// with no fire time within [`HORIZON_YEARS`] is refused.
pub fn parse_cron(line: &str) -> Result<Cron, String> {
    let cron = parse_stored_cron(line)?;
    if !fires_within_horizon(&cron, Utc::now()) {
        return Err(format!(
            "`{line}` never fires in the next {HORIZON_YEARS} years (no day matches its day, month and weekday fields)"
        ));
    }
    Ok(cron)
}

/// Parses a cron line the node stored, checked as new when it was added:
/// one that has no fire time now is kept (listed with no next time) rather
/// than dropped.
pub fn parse_stored_cron(line: &str) -> Result<Cron, String> {
    let fields = line.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "`{line}` has {fields} fields; a cron line has 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(line)
        .map_err(|e| format!("`{line}` is not a valid cron line: {e}"))
}

/// How far ahead a schedule must have a fire time: every leap-year and
/// weekday combination comes round within 28 years.
const HORIZON_YEARS: i64 = 28;

/// Whether `cron` has a day to fire on within [`HORIZON_YEARS`] of `from`.
/// croner searches for the next time without a bound, scanning millennia
/// for a line such as `0 0 0 31 2 *` (February 31st), so the days are
/// checked here first, a day at a time and at most ~10 000 of them.
fn fires_within_horizon(cron: &Cron, from: DateTime<Utc>) -> bool {
    let mut day = from.date_naive();
    for _ in 0..HORIZON_YEARS * 366 {
        let pattern = &cron.pattern;
        if pattern.month_match(day.month()).unwrap_or(false)
            && pattern
                .day_match(day.year(), day.month(), day.day())
                .unwrap_or(false)
        {
            return true;
        }
        let Some(next) = day.succ_opt() else {
            return false;
        };
        day = next;
    }
    false
}

/// The first fire time strictly after `after_ms`; `None` when there is none
/// within [`HORIZON_YEARS`].
fn next_after(cron: &Cron, after_ms: u64) -> Option<u64> {
    // Ticks fall on whole seconds; croner would keep the milliseconds.
    let whole_second = (after_ms / 1000 * 1000) as i64;
    let after: DateTime<Utc> = Utc.timestamp_millis_opt(whole_second).single()?;
    if !fires_within_horizon(cron, after) {
        return None;
    }
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

struct Entry {
    record: ScheduleRecord,
    cron: Cron,
    next: Option<u64>,
    /// Set while a run of this schedule is going; a tick that finds it set is
    /// skipped.
    running: Arc<AtomicBool>,
}

impl Entry {
    fn schedule(&self) -> Schedule {
        Schedule {
            id: self.record.id.clone(),
            name: self.record.name.clone(),
            cron: self.record.cron.clone(),
            input: self.record.input.clone(),
            next: self.next,
            created_at: self.record.created_at,
        }
    }
}

#[derive(Default)]
struct Timers {
    schedules: HashMap<String, Entry>,
    /// Fire time to the schedules due then, in the order they were scheduled;
    /// ids of removed or rescheduled schedules are dropped lazily when their
    /// time comes. A bucket per time rather than a heap of (time, id): a
    /// thousand schedules due at the same second move from one bucket to the
    /// next without comparing their ids.
    due: BTreeMap<u64, Vec<String>>,
}

impl Timers {
    /// Puts schedule `id` in line for fire time `at`.
    fn at(&mut self, at: u64, id: String) {
        self.due.entry(at).or_default().push(id);
    }
}

/// A schedule whose tick has come.
struct Due {
    schedule: Schedule,
    scheduled_for: u64,
    running: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Scheduler {
    timers: Mutex<Timers>,
    changed: Notify,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, record: ScheduleRecord, cron: Cron) -> Schedule {
        let next = next_after(&cron, now_ms());
        let entry = Entry {
            record,
            cron,
            next,
            running: Arc::new(AtomicBool::new(false)),
        };
        let schedule = entry.schedule();
        let mut timers = self.lock();
        if let Some(next) = next {
            timers.at(next, schedule.id.clone());
        }
        timers.schedules.insert(schedule.id.clone(), entry);
        drop(timers);
        self.changed.notify_one();
        schedule
    }

    pub fn remove(&self, id: &str) {
        self.lock().schedules.remove(id);
        self.changed.notify_one();
    }

    pub fn schedules(&self) -> Vec<Schedule> {
        let mut schedules: Vec<Schedule> = self
            .lock()
            .schedules
            .values()
            .map(Entry::schedule)
            .collect();
        schedules.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        schedules
    }

    /// Pops every schedule due at `now`, advancing each to its next fire time.
    /// Returns what to fire and the earliest time still pending.
    fn take_due(&self, now: u64) -> (Vec<Due>, Option<u64>) {
        let mut timers = self.lock();
        let timers = &mut *timers;
        let mut due = Vec::new();
        // Jobs with the same cron line due at the same tick share their next
        // tick: compute it once per line, not once per schedule (a thousand schedules
        // every second is a thousand of the same computation).
        let mut next_ticks: HashMap<String, Option<u64>> = HashMap::new();
        while let Some(bucket) = timers.due.first_entry() {
            let at = *bucket.key();
            if at > now {
                break;
            }
            next_ticks.clear();
            for id in bucket.remove() {
                let Some(entry) = timers.schedules.get_mut(&id) else {
                    continue; // removed
                };
                if entry.next != Some(at) {
                    continue; // stale
                }
                // The next tick follows this one; if the node fell behind
                // by more than a period, resume from now rather than replay.
                let next = match next_ticks.get(entry.record.cron.as_str()) {
                    Some(next) => *next,
                    None => {
                        let next = match next_after(&entry.cron, at) {
                            Some(n) if n <= now => next_after(&entry.cron, now),
                            next => next,
                        };
                        next_ticks.insert(entry.record.cron.clone(), next);
                        next
                    }
                };
                entry.next = next;
                due.push(Due {
                    schedule: entry.schedule(),
                    scheduled_for: at,
                    running: entry.running.clone(),
                });
                if let Some(next) = next {
                    timers.at(next, id);
                }
            }
        }
        let earliest = timers.due.keys().next().copied();
        (due, earliest)
    }
}

/// A tick that has come, for the node to run, or to record as skipped when
/// the schedule's previous run is still going.
pub enum Tick {
    Due {
        schedule: Schedule,
        scheduled_for: u64,
        /// Clears the schedule's running mark when dropped, after its run.
        running: RunningGuard,
    },
    Skipped {
        schedule: Schedule,
        scheduled_for: u64,
    },
}

/// Marks a schedule as running until dropped.
pub struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Scheduler {
    /// How many schedules there are.
    pub fn count(&self) -> usize {
        self.lock().schedules.len()
    }
}

/// The scheduler's one task: sleeps until the earliest tick, hands what is
/// due to `fire`, repeats. Runs for the life of the node.
pub async fn run(scheduler: Arc<Scheduler>, fire: impl Fn(Tick)) {
    loop {
        let (due, earliest) = scheduler.take_due(now_ms());
        for Due {
            schedule,
            scheduled_for,
            running,
        } in due
        {
            let tick = if running.swap(true, Ordering::AcqRel) {
                Tick::Skipped {
                    schedule,
                    scheduled_for,
                }
            } else {
                Tick::Due {
                    schedule,
                    scheduled_for,
                    running: RunningGuard(running),
                }
            };
            fire(tick);
        }
        let changed = scheduler.changed.notified();
        match earliest {
            Some(at) => {
                tokio::select! {
                    _ = sleep_until_ms(at) => {}
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

/// How long before a tick the scheduler stops trusting tokio's timer.
const COARSE_MARGIN: Duration = Duration::from_millis(2);

/// Sleeps until wall-clock millisecond `at`, waking within a fraction of a
/// millisecond of it. Tokio's timer counts whole milliseconds and rounds a
/// deadline up to its next one, so on it alone every burst of ticks began
/// 1 to 3 ms after its second (row f of `make bench`), and every run of the
/// burst started that much later. So the wait is split: tokio's timer
/// sleeps until [`COARSE_MARGIN`] before the tick, and a thread of the
/// blocking pool the rest, which the kernel's high-resolution timer ends
/// within tens of microseconds. A sleep dropped for a change of schedules leaves
/// that thread to finish its last stretch alone.
async fn sleep_until_ms(at: u64) {
    let wait = until_ms(at);
    if wait > COARSE_MARGIN {
        tokio::time::sleep(wait - COARSE_MARGIN).await;
    }
    let rest = until_ms(at);
    if !rest.is_zero() {
        // Fails only when the runtime shuts down, which ends this task too.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// The time from now until wall-clock millisecond `at` (zero once past).
fn until_ms(at: u64) -> Duration {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(at);
    at.duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_never_fire_are_refused_and_rare_ones_kept() {
        for never in ["0 0 0 31 2,4,6,9,11 *", "0 0 30 2 *", "0 0 0 31 4 *"] {
            let e = parse_cron(never).unwrap_err();
            assert!(e.contains("never fires"), "{never}: {e}");
        }
        // February 29th comes every four years (eight across 2100).
        let leap = parse_cron("0 0 0 29 2 *").unwrap();
        let next = next_after(&leap, now_ms()).unwrap();
        assert!(next > now_ms());
        // A line stored before it was refused finds no time, quickly.
        let never = parse_stored_cron("0 0 0 31 2 *").unwrap();
        assert_eq!(next_after(&never, now_ms()), None);
    }

    fn record(id: &str) -> ScheduleRecord {
        ScheduleRecord {
            id: id.into(),
            name: "echo".into(),
            cron: "* * * * * *".into(),
            input: String::new(),
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn a_tick_is_never_woken_for_before_its_time() {
        for ahead in [0, 1, 5, 30] {
            let at = now_ms() + ahead;
            sleep_until_ms(at).await;
            assert!(now_ms() >= at, "woke before {at}");
        }
        assert_eq!(until_ms(now_ms().saturating_sub(10)), Duration::ZERO);
    }

    #[test]
    fn cron_lines() {
        assert!(parse_cron("1/10 * * * * *").is_ok());
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("* * * *").is_err());
        assert!(parse_cron("* * * * * * 2030").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every minute please").is_err());
    }

    #[test]
    fn next_tick_of_seconds_and_minutes() {
        let every_ten = parse_cron("1/10 * * * * *").unwrap();
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(next_after(&every_ten, t0), Some(t0 + 1_000));
        assert_eq!(next_after(&every_ten, t0 + 1_000), Some(t0 + 11_000));
        let every_five_minutes = parse_cron("*/5 * * * *").unwrap();
        assert_eq!(next_after(&every_five_minutes, t0), Some(t0 + 300_000));
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(next_after(&every_second, t0 + 1_500), Some(t0 + 2_000));
    }

    #[test]
    fn due_schedules_advance_and_removed_schedules_do_not_fire() {
        let scheduler = Scheduler::new();
        scheduler.add(record("a"), parse_cron("* * * * * *").unwrap());
        scheduler.add(record("b"), parse_cron("* * * * * *").unwrap());
        scheduler.remove("b");
        let first = scheduler.schedules()[0].next.unwrap();
        let (due, earliest) = scheduler.take_due(first);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].schedule.id, "a");
        assert_eq!(due[0].scheduled_for, first);
        assert_eq!(earliest, Some(first + 1000));
        // Far behind: resumes from now instead of replaying every second.
        let (due, earliest) = scheduler.take_due(first + 60_000);
        assert_eq!(due.len(), 1);
        assert_eq!(earliest, Some(first + 61_000));
    }

    #[test]
    fn schedules_due_together_fire_once_each_in_the_order_scheduled() {
        let scheduler = Scheduler::new();
        let every_second = || parse_cron("* * * * * *").unwrap();
        for id in ["c", "a", "b"] {
            scheduler.add(record(id), every_second());
        }
        // Removed and added again: one of its two places in line is stale.
        scheduler.remove("b");
        scheduler.add(record("b"), every_second());
        let latest = scheduler
            .schedules()
            .iter()
            .filter_map(|j| j.next)
            .max()
            .unwrap();
        let (due, earliest) = scheduler.take_due(latest);
        let ids: Vec<&str> = due.iter().map(|d| d.schedule.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert_eq!(earliest, Some(latest + 1000));
        // Nothing is due twice.
        let (due, _) = scheduler.take_due(latest);
        assert!(due.is_empty());
        let (due, _) = scheduler.take_due(latest + 1000);
        assert_eq!(due.len(), 3);
    }
}
