//! A script's text: reading it (UTF-8, as Python does without a coding
//! cookie), parsing it with the real Python grammar, and turning byte
//! offsets into the 1-based `line:column` every finding carries.

use std::path::{Path, PathBuf};

use rustpython_parser::ast::Suite;
use rustpython_parser::Parse;

use super::ScriptError;

/// The text of one script, with its line starts.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            path,
            text,
            line_starts,
        }
    }

    /// Parse the whole file as a module.
    pub fn parse(&self) -> Result<Suite, ScriptError> {
        Suite::parse(self.text, &self.path.display().to_string()).map_err(|e| {
            let (line, column) = self.position(e.offset.to_usize());
            ScriptError::Syntax {
                path: self.path.to_path_buf(),
                line,
                column,
                message: e.error.to_string(),
            }
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    /// `path:line:column` of a byte offset. A bare file name gets a `./`
    /// so that every output format recognises it as a file.
    pub fn location(&self, offset: usize) -> String {
        let (line, column) = self.position(offset);
        format!("{}:{line}:{column}", display_path(self.path))
    }

    /// The source line holding a byte offset, trimmed and shortened.
    pub fn snippet(&self, offset: usize) -> String {
        let (line, _) = self.position(offset);
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).map_or(self.text.len(), |&e| e);
        let text = self.text[start..end].trim();
        const MAX: usize = 120;
        if text.chars().count() > MAX {
            let cut: String = text.chars().take(MAX).collect();
            format!("{cut}…")
        } else {
            text.to_string()
        }
    }
}

/// The path as findings show it: `./` before a bare file name.
pub(crate) fn display_path(path: &Path) -> String {
    let s = path.display().to_string();
    if s.contains('/') || s.contains('\\') {
        s
    } else {
        format!("./{s}")
    }
}

/// Decode a script's bytes: UTF-8 (a byte-order mark is dropped); anything
/// else is an error at the first byte that is not UTF-8.
pub(crate) fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, ScriptError> {
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The valid prefix is UTF-8 by definition.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        ScriptError::NotUtf8 {
            path: PathBuf::from(path),
            line,
            column,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let s = Source::new(Path::new("a/x.py"), "ab\nµx = 1\n");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(3), (2, 1));
        assert_eq!(s.position(5), (2, 2));
        assert_eq!(s.location(5), "a/x.py:2:2");
        assert_eq!(s.snippet(5), "µx = 1");
    }

    #[test]
    fn bare_names_get_a_folder() {
        assert_eq!(display_path(Path::new("x.py")), "./x.py");
        assert_eq!(display_path(Path::new("d/x.py")), "d/x.py");
    }

    #[test]
    fn non_utf8_is_located() {
        let e = decode(Path::new("x.py"), b"a = 1\nb = '\xff'\n".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "x.py:2:6: not UTF-8 text (Python source must be UTF-8 unless it declares a coding, which caiclust does not read)");
    }
}
