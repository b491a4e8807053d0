//! Configuration: `caiclust.toml`, or `[tool.caiclust]` in `pyproject.toml`,
//! found by walking up from the working folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::advisory::AdvisoryDb;
use crate::context::Plan;
use crate::finding::Level;
use crate::recommend::Backend;

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No file: the defaults.
    Defaults,
    /// `caiclust.toml`.
    CaiclustToml(PathBuf),
    /// `[tool.caiclust]` in `pyproject.toml`.
    Pyproject(PathBuf),
}

/// A configuration problem, naming the file, line and column.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: PathBuf, reason: String },
}

/// The settings. Every field is optional; [`Config::default`] is what a
/// project without a configuration file gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub source: Option<ConfigSource>,
    /// Level per rule id or name (lower-case keys).
    pub levels: BTreeMap<String, Level>,
    /// Findings at or above this level fail `caiclust-check` (default
    /// `error`).
    pub deny: Option<Level>,
    pub workers: Option<usize>,
    pub backend: Option<Backend>,
    pub start_method: Option<String>,
    /// Extra advisory files, resolved against the configuration's folder.
    pub advisory_files: Vec<PathBuf>,
    /// The advisories loaded from them.
    pub extra_advisories: AdvisoryDb,
}

impl Config {
    /// The configured level of a rule, by id or name.
    pub fn level_for(&self, id: &str, name: &str) -> Option<Level> {
        self.levels
            .get(&id.to_ascii_lowercase())
            .or_else(|| self.levels.get(&name.to_ascii_lowercase()))
            .copied()
    }

    /// The level at which `caiclust-check` fails.
    pub fn deny_level(&self) -> Level {
        self.deny.unwrap_or(Level::Error)
    }

    /// The plan with the configuration's overrides filled in.
    pub fn apply_to_plan(&self, plan: &Plan) -> Plan {
        Plan {
            start_method: plan
                .start_method
                .clone()
                .or_else(|| self.start_method.clone()),
            workers: plan.workers.or(self.workers),
            env: plan.env.clone(),
            usage: plan.usage.clone(),
        }
    }

    /// The built-in advisories plus the configured ones.
    pub fn advisory_db(&self) -> AdvisoryDb {
        let mut db = AdvisoryDb::builtin();
        db.extend(self.extra_advisories.clone());
        db
    }

    /// Find and read the configuration for `dir`: the nearest
    /// `caiclust.toml`, or `pyproject.toml` with a `[tool.caiclust]` table,
    /// walking up to the root. No file means the defaults.
    pub fn discover(dir: &Path) -> Result<Config, ConfigError> {
        for folder in dir.ancestors() {
            let own = folder.join("caiclust.toml");
            if own.is_file() {
                return Config::load(&own);
            }
            let pyproject = folder.join("pyproject.toml");
            if pyproject.is_file() {
                let text = read(&pyproject)?;
                if has_tool_caiclust(&text) {
                    return Config::from_pyproject(&text, &pyproject);
                }
            }
        }
        Ok(Config {
            source: Some(ConfigSource::Defaults),
            ..Config::default()
        })
    }

    /// Read a `caiclust.toml`, or a `pyproject.toml` (its
    /// `[tool.caiclust]` table), by file name.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = read(file)?;
        if file.file_name().is_some_and(|n| n == "pyproject.toml") {
            Config::from_pyproject(&text, file)
        } else {
            Config::from_caiclust_toml(&text, file)
        }
    }

    /// Parse the text of a `caiclust.toml`.
    pub fn from_caiclust_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(file, text, &e))?;
        raw.into_config(text, file, ConfigSource::CaiclustToml(file.to_path_buf()))
    }

    /// Parse the `[tool.caiclust]` table of a `pyproject.toml`'s text.
    pub fn from_pyproject(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let doc: Pyproject = toml::from_str(text).map_err(|e| invalid(file, text, &e))?;
        let raw = doc.tool.and_then(|t| t.caiclust).unwrap_or_default();
        raw.into_config(text, file, ConfigSource::Pyproject(file.to_path_buf()))
    }
}

/// Does this `pyproject.toml` text have a `[tool.caiclust]` table? A file
/// that does not parse counts as having one, so that its error is shown.
fn has_tool_caiclust(text: &str) -> bool {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => t
            .get("tool")
            .and_then(|v| v.as_table())
            .is_some_and(|tool| tool.contains_key("caiclust")),
        Err(_) => text.contains("tool.caiclust") || text.contains("[tool]"),
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })
}

pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn invalid(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|s| line_column(text, s.start))
        .unwrap_or((1, 1));
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

fn invalid_at(
    file: &Path,
    text: &str,
    span: std::ops::Range<usize>,
    message: String,
) -> ConfigError {
    let (line, column) = line_column(text, span.start);
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

#[derive(serde::Deserialize)]
struct Pyproject {
    tool: Option<Tools>,
}

#[derive(serde::Deserialize)]
struct Tools {
    caiclust: Option<RawConfig>,
}

/// The file format. Keys are kebab-case; unknown keys are errors.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    /// Level at which `caiclust-check` fails: `error` (default), `warning`
    /// or `info`.
    deny: Option<toml::Spanned<String>>,
    /// Worker processes to plan for.
    workers: Option<toml::Spanned<i64>>,
    /// `multiprocessing`, `ipyparallel` or `single`.
    backend: Option<toml::Spanned<String>>,
    /// `spawn`, `forkserver` or `fork`.
    start_method: Option<toml::Spanned<String>>,
    /// Extra advisory files.
    advisories: Option<Vec<toml::Spanned<String>>>,
    /// Level per rule id or name: `allow`, `info`, `warning`, `error`.
    rules: Option<std::collections::BTreeMap<String, toml::Spanned<String>>>,
}

impl RawConfig {
    fn into_config(
        self,
        text: &str,
        file: &Path,
        source: ConfigSource,
    ) -> Result<Config, ConfigError> {
        let mut config = Config {
            source: Some(source),
            ..Config::default()
        };
        if let Some(deny) = self.deny {
            let span = deny.span();
            let level: Level = deny
                .into_inner()
                .parse()
                .map_err(|m: String| invalid_at(file, text, span.clone(), format!("deny: {m}")))?;
            if level == Level::Allow {
                return Err(invalid_at(
                    file,
                    text,
                    span,
                    "deny: 'allow' would fail on nothing; use info, warning or error".into(),
                ));
            }
            config.deny = Some(level);
        }
        if let Some(w) = self.workers {
            let span = w.span();
            let n = w.into_inner();
            if !(1..=4096).contains(&n) {
                return Err(invalid_at(
                    file,
                    text,
                    span,
                    format!("workers: {n} is not between 1 and 4096"),
                ));
            }
            config.workers = Some(n as usize);
        }
        if let Some(b) = self.backend {
            let span = b.span();
            config.backend = Some(
                b.into_inner()
                    .parse()
                    .map_err(|m: String| invalid_at(file, text, span, m))?,
            );
        }
        if let Some(m) = self.start_method {
            let span = m.span();
            let method = m.into_inner();
            if !matches!(method.as_str(), "spawn" | "forkserver" | "fork") {
                return Err(invalid_at(
                    file,
                    text,
                    span,
                    format!("start-method: unknown method '{method}' (expected spawn, forkserver or fork)"),
                ));
            }
            config.start_method = Some(method);
        }
        for (key, value) in self.rules.unwrap_or_default() {
            let span = value.span();
            if crate::registry::find_rule(&key).is_none() {
                return Err(invalid_at(
                    file,
                    text,
                    span,
                    format!("rules: unknown rule '{key}' (see `caiclust rules`)"),
                ));
            }
            let level: Level = value
                .into_inner()
                .parse()
                .map_err(|m: String| invalid_at(file, text, span, format!("rules.{key}: {m}")))?;
            config.levels.insert(key.to_ascii_lowercase(), level);
        }
        let base = file.parent().unwrap_or(Path::new("."));
        for a in self.advisories.unwrap_or_default() {
            let span = a.span();
            let path = base.join(a.into_inner());
            let db = AdvisoryDb::load(&path)
                .map_err(|e| invalid_at(file, text, span, format!("advisories: {e}")))?;
            config.advisory_files.push(path);
            config.extra_advisories.extend(db);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_rule() -> (&'static str, &'static str) {
        let rule = crate::registry::all_rules()
            .first()
            .expect("the rule table is not empty");
        (rule.info().id, rule.info().name)
    }

    #[test]
    fn reads_every_setting() {
        let (id, name) = a_rule();
        let text = format!(
            "deny = \"warning\"\nworkers = 6\nbackend = \"ipyparallel\"\nstart-method = \"forkserver\"\n[rules]\n{id} = \"allow\"\n\"{name}\" = \"allow\"\n"
        );
        let c = Config::from_caiclust_toml(&text, Path::new("caiclust.toml")).expect("valid");
        assert_eq!(c.deny_level(), Level::Warning);
        assert_eq!(c.workers, Some(6));
        assert_eq!(c.backend, Some(Backend::Ipyparallel));
        assert_eq!(c.start_method.as_deref(), Some("forkserver"));
        assert_eq!(c.level_for(id, name), Some(Level::Allow));
        let plan = c.apply_to_plan(&Plan::default());
        assert_eq!(plan.workers, Some(6));
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        match Config::from_caiclust_toml(text, Path::new("/p/caiclust.toml")) {
            Err(ConfigError::Invalid {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, Path::new("/p/caiclust.toml"));
                (line, column, message)
            }
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let (line, column, message) = error_at("workers = 2\nwokers = 3\n");
        assert_eq!((line, column), (2, 1), "{message}");
        assert!(message.contains("wokers"), "{message}");
        let (line, _, message) = error_at("workers = 2\nstart-method = \"forked\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("forked"), "{message}");
        let (line, column, message) = error_at("\n\nworkers = 0\n");
        assert_eq!((line, column), (3, 11), "{message}");
        let (line, _, message) = error_at("[rules]\nno-such-rule = \"error\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("unknown rule 'no-such-rule'"), "{message}");
        let (id, _) = a_rule();
        let (line, _, message) = error_at(&format!("[rules]\n{id} = \"loud\"\n"));
        assert_eq!(line, 2);
        assert!(message.contains("loud"), "{message}");
        let (_, _, message) = error_at("workers = [");
        assert!(!message.is_empty());
        let e =
            Config::from_caiclust_toml("deny = \"allow\"", Path::new("c.toml")).expect_err("bad");
        assert!(e.to_string().starts_with("c.toml:1:8: "), "{e}");
    }

    #[test]
    fn pyproject_table_and_discovery_upward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(
            root.join("pyproject.toml"),
            "[project]\nname = \"x\"\n[tool.ruff]\nline-length = 100\n[tool.caiclust]\nworkers = 3\n",
        )
        .expect("write");
        let nested = root.join("a/b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        // A pyproject without [tool.caiclust] on the way is passed over.
        std::fs::write(
            root.join("a/pyproject.toml"),
            "[project]\nname = \"inner\"\n",
        )
        .expect("write");
        let c = Config::discover(&nested).expect("found");
        assert_eq!(c.workers, Some(3));
        assert_eq!(
            c.source,
            Some(ConfigSource::Pyproject(root.join("pyproject.toml")))
        );
        // caiclust.toml wins in the same folder.
        std::fs::write(root.join("a/caiclust.toml"), "workers = 5\n").expect("write");
        let c = Config::discover(&nested).expect("found");
        assert_eq!(c.workers, Some(5));
        // An unknown key under [tool.caiclust] names the pyproject line.
        std::fs::write(
            root.join("a/b/pyproject.toml"),
            "[tool.caiclust]\nworkers = 2\ncolour = 1\n",
        )
        .expect("write");
        let e = Config::discover(&nested).expect_err("unknown key");
        assert!(e.to_string().contains("pyproject.toml:3:1"), "{e}");
        // Nothing anywhere: defaults.
        let empty = tempfile::tempdir().expect("tempdir");
        let c = Config::discover(empty.path()).expect("defaults");
        assert_eq!(c.workers, None);
    }

    #[test]
    fn extra_advisories_load_relative_to_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("mine.toml"),
            "[[advisory]]\nid = \"LOCAL-1\"\nruntime = \"openblas\"\nversions = \"<0.3.31\"\ntitle = \"t\"\ndescription = \"d\"\nfix = \"f\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("caiclust.toml"),
            "advisories = [\"mine.toml\"]\n",
        )
        .expect("write");
        let c = Config::discover(dir.path()).expect("valid");
        assert!(c.advisory_db().advisories.iter().any(|a| a.id == "LOCAL-1"));
        assert!(
            c.advisory_db()
                .advisories
                .iter()
                .any(|a| a.id == "CCA-0001"),
            "built-ins stay"
        );
        std::fs::write(
            dir.path().join("caiclust.toml"),
            "advisories = [\"missing.toml\"]\n",
        )
        .expect("write");
        let e = Config::discover(dir.path()).expect_err("missing file");
        assert!(e.to_string().contains("missing.toml"), "{e}");

        // A bad advisory file: the configuration's place, then the file's.
        std::fs::write(
            dir.path().join("mine.toml"),
            "[[advisory]]\nid = \"LOCAL-1\"\nruntime = \"libgomp\"\nversions = \"<9\"\ntitle = \"t\"\ndescription = \"d\"\nfix = \"f\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("caiclust.toml"),
            "advisories = [\"mine.toml\"]\n",
        )
        .expect("write");
        let e = Config::discover(dir.path()).expect_err("unknown runtime");
        let text = e.to_string();
        assert!(text.contains("caiclust.toml:1:15: advisories: "), "{text}");
        assert!(
            text.contains("mine.toml:3:11: advisory LOCAL-1: unknown runtime 'libgomp'"),
            "{text}"
        );
    }
}
