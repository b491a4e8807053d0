//! What parent and child say to each other: the request (JSON in
//! [`RUNTIME_QUERY_ENV`](super::RUNTIME_QUERY_ENV)) and the child's
//! progress and answer (JSON lines on its stdout).
//!
//! The child announces each step *before* taking it (`loading_dependency
//! <name>`, `loading`, `calling <symbol>`), so that when it dies the parent knows where. Lines that are
//! not protocol messages are ignored, whatever prints them.

use serde::{Deserialize, Serialize};

use super::{LoadFirst, RuntimeQuery};
use crate::facts::RuntimeAnswer;

/// Bumped when the request or the messages change incompatibly: a helper
/// from another caiclust version answers with an error instead of
/// misreading the query.
pub(super) const PROTOCOL_VERSION: u32 = 2;

/// The query as the child receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Request {
    pub protocol: u32,
    pub query: RuntimeQuery,
    /// CPU ids to pin to before loading.
    pub affinity: Option<Vec<usize>>,
    /// Libraries to load before the queried one, in this order.
    #[serde(default)]
    pub load_first: Vec<LoadFirst>,
}

/// One line of the child's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "caiclust_runtime_query", rename_all = "snake_case")]
pub(super) enum Message {
    /// About to load one of the libraries to load first (its constructors
    /// run now).
    LoadingDependency { name: String },
    /// About to load the library (its constructors run now).
    Loading,
    /// About to call this function.
    Calling { symbol: String },
    /// The final answer; nothing follows.
    Answer { answer: RuntimeAnswer },
}

impl Message {
    /// The message as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"caiclust_runtime_query":"unencodable","error":"{e}"}}"#)
        });
        line.push('\n');
        line
    }
}

/// How far the child got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Stage {
    /// It printed nothing of the protocol: not a query helper, or it died
    /// before reading the query.
    #[default]
    NotStarted,
    LoadingDependency(String),
    Loading,
    Calling(String),
    Answered,
}

impl Stage {
    /// The stage as the end of a sentence: `while loading`.
    pub fn describe(&self) -> String {
        match self {
            Self::NotStarted => "before the query began".to_owned(),
            Self::LoadingDependency(name) => format!("while loading its dependency {name}"),
            Self::Loading => "while loading".to_owned(),
            Self::Calling(symbol) => format!("while calling {symbol}"),
            Self::Answered => "after answering".to_owned(),
        }
    }
}

/// What the child's stdout said.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Transcript {
    pub stage: Stage,
    /// Functions announced, in order.
    pub calls: Vec<String>,
    pub answer: Option<RuntimeAnswer>,
}

impl Transcript {
    /// Read the child's stdout. A truncated last line (the child died
    /// while writing it) is ignored like any line that is not a message.
    pub fn read(stdout: &[u8]) -> Self {
        let mut t = Self::default();
        for line in stdout.split(|&b| b == b'\n') {
            let Ok(message) = serde_json::from_slice::<Message>(line) else {
                continue;
            };
            match message {
                Message::LoadingDependency { name } => t.stage = Stage::LoadingDependency(name),
                Message::Loading => t.stage = Stage::Loading,
                Message::Calling { symbol } => {
                    t.calls.push(symbol.clone());
                    t.stage = Stage::Calling(symbol);
                }
                Message::Answer { answer } => {
                    t.stage = Stage::Answered;
                    t.answer = Some(answer);
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{ThreadingLayer, Vendor};

    #[test]
    fn messages_round_trip_through_a_noisy_stream() {
        let answer = RuntimeAnswer {
            calls: vec!["openblas_get_config".into()],
            version: Some("0.3.21".into()),
            threading_layer: Some(ThreadingLayer::Pthreads),
            num_threads: Some(2),
            ..RuntimeAnswer::default()
        };
        let mut out = Vec::new();
        out.extend_from_slice(b"library noise\n{\"not\": \"ours\"}\n");
        out.extend_from_slice(Message::Loading.to_line().as_bytes());
        out.extend_from_slice(
            Message::Calling {
                symbol: "openblas_get_config".into(),
            }
            .to_line()
            .as_bytes(),
        );
        out.extend_from_slice(
            Message::Answer {
                answer: answer.clone(),
            }
            .to_line()
            .as_bytes(),
        );
        let t = Transcript::read(&out);
        assert_eq!(t.stage, Stage::Answered);
        assert_eq!(t.calls, ["openblas_get_config"]);
        assert_eq!(t.answer, Some(answer));
    }

    #[test]
    fn a_death_mid_call_leaves_the_stage() {
        let mut out = Message::Loading.to_line();
        out += &Message::Calling {
            symbol: "scipy_openblas_get_config64_".into(),
        }
        .to_line();
        out += r#"{"caiclust_runtime_query":"answer","answ"#; // cut short
        let t = Transcript::read(out.as_bytes());
        assert_eq!(
            t.stage,
            Stage::Calling("scipy_openblas_get_config64_".into())
        );
        assert_eq!(
            t.stage.describe(),
            "while calling scipy_openblas_get_config64_"
        );
        assert_eq!(t.answer, None);
        assert_eq!(Transcript::read(b"").stage, Stage::NotStarted);
    }

    #[test]
    fn a_death_while_loading_a_dependency_names_it() {
        let out = Message::LoadingDependency {
            name: "libgfortran-040039e1.so.5.0.0".into(),
        }
        .to_line();
        let t = Transcript::read(out.as_bytes());
        assert_eq!(
            t.stage.describe(),
            "while loading its dependency libgfortran-040039e1.so.5.0.0"
        );
    }

    #[test]
    fn a_request_without_load_first_reads_as_none() {
        let json = format!(
            r#"{{"protocol":{PROTOCOL_VERSION},"query":{{"library":"/x","vendor":"openblas",
            "symbol_prefix":null,"symbol_suffix":null}},"affinity":null}}"#
        );
        let r: Request = serde_json::from_str(&json).unwrap();
        assert!(r.load_first.is_empty());
    }

    #[test]
    fn request_round_trips() {
        let r = Request {
            protocol: PROTOCOL_VERSION,
            query: RuntimeQuery {
                library: "/x/libscipy_openblas64_-1.so".into(),
                vendor: Vendor::Openblas,
                symbol_prefix: Some("scipy_".into()),
                symbol_suffix: Some("64_".into()),
            },
            affinity: Some(vec![0, 3]),
            load_first: vec![LoadFirst {
                name: "libgfortran-040039e1.so.5.0.0".into(),
                path: "/x/libgfortran-040039e1.so.5.0.0".into(),
            }],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
    }
}
