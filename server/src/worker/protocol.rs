//! The messages between the server and a worker, on a channel of their own: a Unix socket
//! that the worker finds as file descriptor 3 ([`CHANNEL_FD`]).
//!
//! The worker's standard output is not the channel: a custom kernel's `printf` writes there,
//! and whatever it prints must never read as an event. Each message is one frame, a 4-byte
//! big-endian length and then that many bytes of JSON; a frame longer than
//! [`MAX_FRAME_BYTES`] is refused before anything is read into memory. Each job carries a
//! nonce the server drew for it, and every event of the job must carry it back.

use std::io::{self, Read};

use base64::Engine as _;
use gpulab_shared::diag::{CheckResult, Fault};
use gpulab_shared::{Device, JobResult, Params};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::kernels::Artifact;

/// The worker's end of the channel.
pub const CHANNEL_FD: i32 = 3;

/// The longest frame either side accepts: the largest legitimate message is a `finished`
/// event with an 8192 × 8192 RGB PNG (at most about 202 MB even when it does not compress)
/// in base64.
pub const MAX_FRAME_BYTES: usize = 384 << 20;

/// What the server asks a worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run one job: a warm-up, `repetitions` timed runs and the check.
    Run {
        job_id: i64,
        /// Drawn by the server for this job; every event of the job carries it back.
        nonce: u64,
        kernel: String,
        params: Params,
        repetitions: u32,
    },
    /// Run one device's part of a diagnostic: every check of `level` on this worker's
    /// device, reporting each check as it changes.
    Diagnose {
        diag_id: i64,
        /// Drawn by the server for this part; every event of it carries it back.
        nonce: u64,
        /// The device as the server's inventory describes it (what the checks expect of
        /// it: its model, memory, link).
        device: Box<Device>,
        level: u8,
        /// Level 3's stress time, in seconds.
        duration_s: f64,
        faults: Vec<Fault>,
        /// This device's earlier measured figures, newest first.
        baseline: Vec<PastFigures>,
    },
}

/// One figure of a device's earlier diagnostics: every value measured for the evidence
/// `evidence` of the check `check`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastFigures {
    pub check: String,
    pub evidence: String,
    pub measured: Vec<f64>,
}

/// What a worker tells the server.
// One event per job and a few per run: the size of `Finished` (its result grew with
// `fraction_of_peak` and `roofline`) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker owns its device and takes requests.
    Ready { device: String },
    /// The worker has the job and starts it: a worker that dies before saying so never
    /// ran it, and the job may go to another.
    Started { job_id: i64, nonce: u64 },
    /// `done` of `total` timed repetitions of a running job have finished.
    Progress {
        job_id: i64,
        nonce: u64,
        done: u32,
        total: u32,
    },
    /// The job ran to the end; its verification may still have failed.
    Finished {
        job_id: i64,
        nonce: u64,
        result: JobResult,
        artifact: Option<WireArtifact>,
    },
    /// The job could not run, with the reason. `fatal`: the worker's device context is
    /// broken (a faulting kernel), so the worker exits and must be replaced.
    Failed {
        job_id: i64,
        nonce: u64,
        error: String,
        #[serde(default)]
        fatal: bool,
    },
    /// The worker has the diagnostic part and starts its checks.
    DiagnosticStarted { diag_id: i64, nonce: u64 },
    /// A check of the running part changed (it started, progressed or ended): the whole
    /// check as it is now.
    DiagnosticCheck {
        diag_id: i64,
        nonce: u64,
        check: Box<CheckResult>,
    },
    /// Every check of the part has ended; `checks` are all of them, in order.
    DiagnosticFinished {
        diag_id: i64,
        nonce: u64,
        checks: Vec<CheckResult>,
    },
    /// The part could not run to its end, with the reason. `fatal`: as for a job.
    DiagnosticFailed {
        diag_id: i64,
        nonce: u64,
        error: String,
        #[serde(default)]
        fatal: bool,
    },
}

impl Event {
    /// The job and nonce an event is about; `None` for `ready` and a diagnostic's events.
    pub fn job(&self) -> Option<(i64, u64)> {
        match self {
            Event::Started { job_id, nonce }
            | Event::Progress { job_id, nonce, .. }
            | Event::Finished { job_id, nonce, .. }
            | Event::Failed { job_id, nonce, .. } => Some((*job_id, *nonce)),
            _ => None,
        }
    }

    /// The diagnostic and nonce an event is about; `None` for `ready` and a job's events.
    pub fn diagnostic(&self) -> Option<(i64, u64)> {
        match self {
            Event::DiagnosticStarted { diag_id, nonce }
            | Event::DiagnosticCheck { diag_id, nonce, .. }
            | Event::DiagnosticFinished { diag_id, nonce, .. }
            | Event::DiagnosticFailed { diag_id, nonce, .. } => Some((*diag_id, *nonce)),
            _ => None,
        }
    }
}

/// An artifact on the wire: its bytes in base64, since the protocol is JSON.
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

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is longer than the limit of {MAX_FRAME_BYTES} bytes")]
    TooLong(usize),
    #[error("the channel closed in the middle of a frame")]
    Truncated,
    #[error("a frame is not a message of the protocol: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("reading the channel failed: {0}")]
    Io(io::Error),
}

/// One message as a frame: its length, then its JSON.
pub fn encode(message: &impl Serialize) -> Vec<u8> {
    let mut frame = vec![0; 4];
    serde_json::to_writer(&mut frame, message).expect("protocol messages serialise");
    let len = u32::try_from(frame.len() - 4).expect("a message fits in a frame");
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLong(len));
    }
    Ok(len)
}

fn eof_is_truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// The next message, or `None` when the channel closed between frames (the worker side).
pub fn read_blocking<T: DeserializeOwned>(from: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; 4];
    match from.read(&mut header[..1]) {
        // A peer that exits with bytes of ours unread resets the socket: it closed it.
        Ok(0) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(FrameError::Io(e)),
    }
    from.read_exact(&mut header[1..])
        .map_err(eof_is_truncated)?;
    let mut body = vec![0; frame_len(header)?];
    from.read_exact(&mut body).map_err(eof_is_truncated)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// The next message, or `None` when the channel closed between frames (the server side).
/// Not cancel-safe: a caller that drops it in the middle of a frame must drop the channel.
pub async fn read<T: DeserializeOwned>(
    from: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; 4];
    match from.read(&mut header[..1]).await {
        // A peer that exits with bytes of ours unread resets the socket: it closed it.
        Ok(0) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(FrameError::Io(e)),
    }
    from.read_exact(&mut header[1..])
        .await
        .map_err(eof_is_truncated)?;
    let len = frame_len(header)?;
    // Grown as bytes arrive rather than allocated up front: a header alone costs nothing.
    let mut body = Vec::with_capacity(len.min(1 << 20));
    let got = from
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(FrameError::Io)?;
    if got < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(nonce: u64) -> Event {
        Event::Progress {
            job_id: 7,
            nonce,
            done: 1,
            total: 2,
        }
    }

    #[tokio::test]
    async fn frames_round_trip_on_both_sides() {
        let mut bytes = encode(&progress(42));
        bytes.extend(encode(&Event::Ready {
            device: "cpu".into(),
        }));
        let mut reader = &bytes[..];
        assert_eq!(
            read::<Event>(&mut reader).await.unwrap(),
            Some(progress(42))
        );
        assert!(matches!(
            read::<Event>(&mut reader).await.unwrap(),
            Some(Event::Ready { .. })
        ));
        assert!(read::<Event>(&mut reader).await.unwrap().is_none());
        let mut reader = &bytes[..];
        assert_eq!(
            read_blocking::<Event>(&mut reader).unwrap(),
            Some(progress(42))
        );
    }

    #[tokio::test]
    async fn hole2_a_forged_json_line_is_not_a_frame() {
        // What a kernel's printf would have written when events were lines on stdout.
        let forged = br#"{"type":"failed","job_id":7,"nonce":0,"error":"x"}
"#;
        let err = read::<Event>(&mut &forged[..]).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLong(_)), "{err}");
    }

    #[tokio::test]
    async fn hole2_an_endless_frame_is_refused_before_it_is_read() {
        // A header that announces 4 GiB, then 100 MiB of bytes without an end: the reader
        // refuses the header and never buffers the bytes.
        let mut stream = vec![0xff, 0xff, 0xff, 0xff];
        stream.resize(4 + (100 << 20), b'x');
        let err = read::<Event>(&mut &stream[..]).await.unwrap_err();
        assert!(err.to_string().contains("longer than the limit"), "{err}");
        let err = read_blocking::<Event>(&mut &stream[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLong(_)), "{err}");
    }

    #[tokio::test]
    async fn hole2_a_cut_or_garbled_frame_is_an_error_not_a_message() {
        let whole = encode(&progress(1));
        let cut = &whole[..whole.len() - 3];
        assert!(matches!(
            read::<Event>(&mut &cut[..]).await.unwrap_err(),
            FrameError::Truncated
        ));
        let mut garbled = 5u32.to_be_bytes().to_vec();
        garbled.extend(b"hello");
        assert!(matches!(
            read::<Event>(&mut &garbled[..]).await.unwrap_err(),
            FrameError::Unreadable(_)
        ));
    }

    #[test]
    fn a_diagnostics_events_name_it_and_are_never_a_jobs() {
        let started = Event::DiagnosticStarted {
            diag_id: 7,
            nonce: 9,
        };
        assert_eq!(started.diagnostic(), Some((7, 9)));
        assert_eq!(started.job(), None, "a job 7 cannot take it for its own");
        assert_eq!(progress(9).diagnostic(), None);
        let failed = Event::DiagnosticFailed {
            diag_id: 3,
            nonce: 4,
            error: "x".into(),
            fatal: false,
        };
        let frame = encode(&failed);
        assert!(std::str::from_utf8(&frame[4..])
            .unwrap()
            .contains(r#""type":"diagnostic_failed""#));
        assert_eq!(
            read_blocking::<Event>(&mut &frame[..]).unwrap(),
            Some(failed)
        );
    }

    #[test]
    fn events_name_their_job_and_nonce() {
        assert_eq!(progress(9).job(), Some((7, 9)));
        assert_eq!(
            Event::Ready {
                device: "cpu".into()
            }
            .job(),
            None
        );
    }
}
