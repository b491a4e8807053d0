//! What a rule reports: findings, levels, and the rule's own description.

use caiclust_probe::Evidence;
use serde::{Deserialize, Serialize};

/// How serious a finding is. Ordered: `Allow < Info < Warning < Error`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The rule is switched off.
    Allow,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" | "off" => Ok(Self::Allow),
            "info" => Ok(Self::Info),
            "warning" | "warn" => Ok(Self::Warning),
            "error" | "deny" => Ok(Self::Error),
            other => Err(format!(
                "unknown level '{other}' (expected allow, info, warning or error)"
            )),
        }
    }
}

/// What kind of trouble a rule detects; the category sets the default level.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The run will hang or crash.
    HangOrCrash,
    /// The run will be slow: too many threads for the CPUs.
    Oversubscription,
    /// Protection that is believed in but absent; settings that do nothing.
    Ineffective,
    /// A known bug in this version of a runtime.
    Advisory,
    /// Works while everything else does; a missing program, a dead worker
    /// or leftovers of an earlier run turn it into a hang with no error.
    Robustness,
    /// Worth knowing; not a problem by itself.
    Note,
}

impl Category {
    /// The level a rule of this category has unless configured otherwise.
    pub fn default_level(self) -> Level {
        match self {
            Self::HangOrCrash => Level::Error,
            Self::Oversubscription | Self::Ineffective | Self::Advisory | Self::Robustness => {
                Level::Warning
            }
            Self::Note => Level::Info,
        }
    }
}

/// A rule's identity and documentation. The explanation is Markdown with
/// the sections *What it detects*, *Why it is bad*, *Example*, *Fix* and
/// *References*; `caiclust explain ID` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Stable id, e.g. `CC001`. Never reused.
    pub id: &'static str,
    /// Stable kebab-case name, e.g. `gnu-openmp-after-fork`.
    pub name: &'static str,
    pub category: Category,
    /// One line, shown with every finding.
    pub summary: &'static str,
    /// The long explanation (Markdown).
    pub explanation: &'static str,
    /// The hazards of `shared/HAZARDS.md` this rule covers (`H01`...).
    pub hazards: &'static [&'static str],
    /// Whether its findings depend on how workers start (fork, spawn,
    /// forkserver): then another start method avoids them. The hazard
    /// policy ([`crate::assess`]) reads this, never rule ids.
    pub depends_on_start_method: bool,
}

/// One problem found in the facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub rule_id: String,
    pub rule_name: String,
    /// The level after configuration.
    pub level: Level,
    /// What is wrong here, naming the library, variable or file.
    pub message: String,
    /// The observations it rests on: library, file, variable and value.
    pub evidence: Vec<Evidence>,
    /// What to change.
    pub fix: Option<String>,
    /// Variables that, set before the interpreter starts, remove this
    /// finding (`OMP_NUM_THREADS=1` for a GNU OpenMP pool under fork);
    /// empty when no environment does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_fix: Vec<crate::EnvSetting>,
    /// Where: a library path, a variable name, `file:line:column`.
    pub location: Option<String>,
    /// A hazard below the error level only because nothing shows the code
    /// that will run (no script, no live process): a GNU OpenMP pool that
    /// is installed, not shown used. The report keeps the rule's lower
    /// level, but the hazard policy ([`crate::assess`]) presumes the
    /// worst, so whatever runs code it cannot read avoids the hazard.
    /// A level set in the configuration clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presumed: bool,
}
