//! `compare`: the same closed-loop workload against several deployments
//! (function, service, job) of one model.

use serde::{Deserialize, Serialize};

use super::positive;
use crate::run::{Lab, ScenarioResult};
use crate::LabError;

/// `users` closed-loop users for `duration_s` after `warmup_s`, against
/// each function in turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub users: u32,
    pub duration_s: f64,
    #[serde(default)]
    pub warmup_s: f64,
    /// Each user's wait after an answer, as in `throughput`.
    #[serde(default)]
    pub think_ms: f64,
}

impl Compare {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.users, 4);
        super::cap(&mut self.duration_s, 1.0);
        super::cap(&mut self.warmup_s, 0.2);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        positive("users", f64::from(self.users))?;
        positive("duration_s", self.duration_s)?;
        super::think(self.think_ms)
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let settings = super::Throughput {
            users: vec![self.users],
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            think_ms: self.think_ms,
        };
        super::throughput::closed_loop(lab, r, functions, payload, &settings).await?;
        r.notes.push(
            "the same closed-loop workload against each deployment; cost columns price each deployment's own records"
                .into(),
        );
        Ok(())
    }
}
