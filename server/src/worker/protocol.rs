//! The messages between the server and a worker: one JSON object per line, requests on
//! the worker's stdin, events on its stdout.

use base64::Engine as _;
use gpulab_shared::{JobResult, Params};
use serde::{Deserialize, Serialize};

use crate::kernels::Artifact;

/// What the server asks a worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run one job: a warm-up, `repetitions` timed runs and the check.
    Run {
        job_id: i64,
        kernel: String,
        params: Params,
        repetitions: u32,
    },
}

/// What a worker tells the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker owns its device and takes requests.
    Ready { device: String },
    /// `done` of `total` timed repetitions of a running job have finished.
    Progress { job_id: i64, done: u32, total: u32 },
    /// The job ran to the end; its verification may still have failed.
    Finished {
        job_id: i64,
        result: JobResult,
        artifact: Option<WireArtifact>,
    },
    /// The job could not run, with the reason. `fatal`: the worker's device context is
    /// broken (a faulting kernel), so the worker exits and must be replaced.
    Failed {
        job_id: i64,
        error: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// An artifact on the wire: its bytes in base64, since the protocol is JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireArtifact {
    pub content_type: String,
    pub base64: String,
}

impl From<&Artifact> for WireArtifact {
    fn from(a: &Artifact) -> Self {
        WireArtifact {
            content_type: a.content_type.clone(),
            base64: base64::engine::general_purpose::STANDARD.encode(&a.bytes),
        }
    }
}

impl TryFrom<WireArtifact> for Artifact {
    type Error = base64::DecodeError;

    fn try_from(w: WireArtifact) -> Result<Self, Self::Error> {
        Ok(Artifact {
            content_type: w.content_type,
            bytes: base64::engine::general_purpose::STANDARD.decode(w.base64)?,
        })
    }
}
