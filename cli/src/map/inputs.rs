//! Where a map's inputs come from, as GNU parallel takes them: `::: a b c`
//! on the command line, `:::: FILE` (one input per line, `-` for standard
//! input), `-a FILE`, or standard input when nothing else is given. Several
//! sources combine into every combination (the first varies slowest);
//! `:::+` and `::::+` link a source to the one before it instead (values
//! paired up, as long as the shorter one lasts).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::MapError;

/// The marker words.
const ARGS: &str = ":::";
const ARGS_LINKED: &str = ":::+";
const FILES: &str = "::::";
const FILES_LINKED: &str = "::::+";

/// Where one input source's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The values after the `n`-th `:::` (1-based).
    Args(usize),
    /// A file, one value per line (or per NUL with `--null`).
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Args(n) => write!(f, "the arguments after ::: number {n}"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Stdin => f.write_str("standard input"),
        }
    }
}

/// One input source as written on the command line, not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub origin: Origin,
    /// The values, for `:::`.
    pub values: Vec<String>,
    /// Linked to the source before it (`:::+`, `::::+`).
    pub linked: bool,
}

/// The command words and the input sources after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub command: Vec<String>,
    pub sources: Vec<SourceSpec>,
}

/// Split `CMD ARGS... ::: a b :::: FILE` into the command and its sources.
/// `files` are the `-a FILE` sources, which come first.
pub fn split(words: &[String], files: &[PathBuf]) -> Result<CommandLine, MapError> {
    let mut sources: Vec<SourceSpec> = files.iter().map(|p| file_spec(p, false)).collect();
    let first_marker = words
        .iter()
        .position(|w| matches!(w.as_str(), ARGS | ARGS_LINKED | FILES | FILES_LINKED));
    let (command, rest) = match first_marker {
        Some(i) => (words[..i].to_vec(), &words[i..]),
        None => (words.to_vec(), &words[words.len()..]),
    };
    let mut args_groups = 0;
    let mut i = 0;
    while i < rest.len() {
        let marker = rest[i].as_str();
        let end = rest[i + 1..]
            .iter()
            .position(|w| matches!(w.as_str(), ARGS | ARGS_LINKED | FILES | FILES_LINKED))
            .map_or(rest.len(), |p| i + 1 + p);
        let values = &rest[i + 1..end];
        let linked = marker.ends_with('+');
        if linked && sources.is_empty() {
            return Err(MapError::Usage(format!(
                "{marker} links to the input source before it, but it comes first"
            )));
        }
        match marker {
            ARGS | ARGS_LINKED => {
                args_groups += 1;
                sources.push(SourceSpec {
                    origin: Origin::Args(args_groups),
                    values: values.to_vec(),
                    linked,
                });
            }
            _ => {
                if values.is_empty() {
                    return Err(MapError::Usage(format!(
                        "{marker} needs one or more files (- for standard input)"
                    )));
                }
                for (k, v) in values.iter().enumerate() {
                    sources.push(file_spec(Path::new(v), linked && k == 0));
                }
            }
        }
        i = end;
    }
    let stdin_uses = sources.iter().filter(|s| s.origin == Origin::Stdin).count();
    if stdin_uses > 1 {
        return Err(MapError::Usage(
            "standard input (-) is named as an input source more than once".into(),
        ));
    }
    Ok(CommandLine { command, sources })
}

fn file_spec(p: &Path, linked: bool) -> SourceSpec {
    SourceSpec {
        origin: if p.as_os_str() == "-" {
            Origin::Stdin
        } else {
            Origin::File(p.to_path_buf())
        },
        values: Vec::new(),
        linked,
    }
}

/// One input source, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub origin: Origin,
    pub values: Vec<String>,
    pub linked: bool,
}

impl Source {
    /// Where value `i` (0-based) came from, for error messages.
    pub fn locate(&self, i: usize) -> String {
        match &self.origin {
            Origin::Args(n) => format!("argument {} after ::: number {n}", i + 1),
            Origin::File(p) => format!("{}:{}", p.display(), i + 1),
            Origin::Stdin => format!("standard input, line {}", i + 1),
        }
    }
}

/// Read every source: files and standard input split at newlines (a
/// trailing `\r` goes too) or, with `null`, at NUL bytes.
pub fn read_all(
    specs: Vec<SourceSpec>,
    null: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<Source>, MapError> {
    specs
        .into_iter()
        .map(|spec| {
            let values = match &spec.origin {
                Origin::Args(_) => spec.values,
                Origin::File(p) => {
                    let bytes = std::fs::read(p).map_err(|e| MapError::Input {
                        what: format!("input file {}", p.display()),
                        message: e.to_string(),
                    })?;
                    split_values(&bytes, null, &spec.origin)?
                }
                Origin::Stdin => {
                    let mut bytes = Vec::new();
                    stdin.read_to_end(&mut bytes).map_err(|e| MapError::Input {
                        what: "standard input".into(),
                        message: e.to_string(),
                    })?;
                    split_values(&bytes, null, &spec.origin)?
                }
            };
            Ok(Source {
                origin: spec.origin,
                values,
                linked: spec.linked,
            })
        })
        .collect()
}

fn split_values(bytes: &[u8], null: bool, origin: &Origin) -> Result<Vec<String>, MapError> {
    let sep = if null { b'\0' } else { b'\n' };
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == sep).collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if null {
                p
            } else {
                p.strip_suffix(b"\r").unwrap_or(p)
            };
            String::from_utf8(p.to_vec()).map_err(|e| MapError::Input {
                what: match origin {
                    Origin::Stdin => format!("standard input, line {}", i + 1),
                    other => format!("{other}:{}", i + 1),
                },
                message: format!(
                    "not UTF-8 text (byte {} of the value)",
                    e.utf8_error().valid_up_to() + 1
                ),
            })
        })
        .collect()
}

/// Every job's values (one per source), in GNU parallel's order: linked
/// sources paired up, the groups combined with the first varying slowest.
/// Each job also gets the index of its value in every source.
pub fn combine(sources: &[Source]) -> Vec<Vec<usize>> {
    // Blocks of linked sources; each block is a list of rows of indices.
    let mut blocks: Vec<Vec<Vec<usize>>> = Vec::new();
    for s in sources {
        match blocks.last_mut() {
            Some(block) if s.linked => {
                let n = block.len().min(s.values.len());
                block.truncate(n);
                for (i, row) in block.iter_mut().enumerate() {
                    row.push(i);
                }
            }
            _ => blocks.push((0..s.values.len()).map(|i| vec![i]).collect()),
        }
    }
    let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
    for block in &blocks {
        let mut next = Vec::with_capacity(rows.len().saturating_mul(block.len()));
        for r in &rows {
            for b in block {
                let mut row = r.clone();
                row.extend_from_slice(b);
                next.push(row);
            }
        }
        rows = next;
    }
    if blocks.is_empty() {
        return Vec::new();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn src(values: &[&str], linked: bool) -> Source {
        Source {
            origin: Origin::Args(1),
            values: w(values),
            linked,
        }
    }

    fn values(sources: &[Source]) -> Vec<Vec<String>> {
        combine(sources)
            .into_iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(s, &i)| sources[s].values[i].clone())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn splits_command_from_sources() {
        let cl = split(
            &w(&["echo", "{}", ":::", "a", "b", ":::+", "1", "::::", "f", "-"]),
            &[PathBuf::from("first")],
        )
        .unwrap();
        assert_eq!(cl.command, w(&["echo", "{}"]));
        let origins: Vec<_> = cl.sources.iter().map(|s| s.origin.clone()).collect();
        assert_eq!(
            origins,
            [
                Origin::File("first".into()),
                Origin::Args(1),
                Origin::Args(2),
                Origin::File("f".into()),
                Origin::Stdin
            ]
        );
        assert!(cl.sources[2].linked && !cl.sources[3].linked);
        assert_eq!(cl.sources[1].values, w(&["a", "b"]));
    }

    #[test]
    fn bad_markers_are_usage_errors() {
        assert!(split(&w(&["echo", ":::+", "a"]), &[]).is_err());
        assert!(split(&w(&["echo", "::::"]), &[]).is_err());
        assert!(split(&w(&["echo", "::::", "-", "::::", "-"]), &[]).is_err());
    }

    #[test]
    fn product_and_links_follow_gnu_parallel() {
        let s = [src(&["a", "b"], false), src(&["1", "2"], false)];
        assert_eq!(values(&s), [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]);
        let s = [src(&["a", "b", "c"], false), src(&["1", "2"], true)];
        assert_eq!(values(&s), [["a", "1"], ["b", "2"]]);
        let s = [src(&["a"], false), src(&[], false)];
        assert!(values(&s).is_empty());
        assert!(combine(&[]).is_empty());
    }

    #[test]
    fn lines_and_nul_separated_values() {
        let o = Origin::Stdin;
        assert_eq!(
            split_values(b"a\r\n\nb", false, &o).unwrap(),
            w(&["a", "", "b"])
        );
        assert_eq!(
            split_values(b"a b\0c\n\0", true, &o).unwrap(),
            w(&["a b", "c\n"])
        );
        assert!(split_values(b"", false, &o).unwrap().is_empty());
        let e = split_values(b"ok\n\xff\n", false, &Origin::File("in.txt".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.txt:2"), "{e}");
    }
}
