//! The `schedule` trigger: rate(...) and cron(...) expressions that invoke a
//! function asynchronously (keep-warm pings, periodic batch jobs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use virga_spec::schedule::{Schedule, ScheduleExpression};
use virga_spec::Trigger;

use super::Events;

/// Calls `fire` at every firing of `schedule` until the task is aborted.
/// Rates run on tokio's clock (so tests can pause it); cron on the wall clock.
pub(crate) async fn schedule_loop(schedule: &Schedule, mut fire: impl FnMut()) {
    match schedule {
        Schedule::Rate { every_ms } => {
            let period = Duration::from_millis(*every_ms);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            // A late tick (a busy host) fires once, not in a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                fire();
            }
        }
        Schedule::Cron(_) => loop {
            let now = chrono::Utc::now();
            let Some(next) = schedule.next_after(now) else {
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            fire();
        },
    }
}

impl Events {
    pub(crate) async fn run_schedule(
        self: Arc<Self>,
        function: String,
        rule: String,
        schedule: ScheduleExpression,
        input: Option<String>,
    ) {
        let me = self.clone();
        schedule_loop(schedule.schedule(), move || {
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let payload = match &input {
                Some(i) => i.clone(),
                None => virga_spec::events::schedule_event(
                    &rule.replace(':', "-"),
                    &uuid::Uuid::new_v4().to_string(),
                    &time,
                )
                .to_string(),
            };
            let me = me.clone();
            let function = function.clone();
            tokio::spawn(async move {
                if let Err(e) = me
                    .invoke_async(&function, Bytes::from(payload), Trigger::Schedule)
                    .await
                {
                    tracing::warn!(function, error = %e, "scheduled event not accepted");
                }
            });
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs `expression`'s loop on a task; the counter counts its firings.
    fn count_firings(expression: &str) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let s = Schedule::parse(expression).unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let task = tokio::spawn(async move {
            schedule_loop(&s, || {
                f.fetch_add(1, Ordering::SeqCst);
            })
            .await
        });
        (fired, task)
    }

    #[tokio::test(start_paused = true)]
    async fn rate_schedules_fire_once_per_period_on_a_paused_clock() {
        let (fired, task) = count_firings("rate(1 minute)");
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(
            fired.load(Ordering::SeqCst),
            0,
            "nothing before the first period"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(180)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 4);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_rate_waits_without_overflowing_the_clock() {
        let (fired, task) = count_firings("rate(36500 days)");
        tokio::time::sleep(Duration::from_secs(400 * 86_400)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        assert!(!task.is_finished(), "the schedule is still waiting");
        task.abort();
    }
}
