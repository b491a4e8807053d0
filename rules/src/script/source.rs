//! A script's text: parsing it with the real Python grammar, and turning
//! byte offsets into the places every finding carries: `path:line:column`
//! for a script, `path:cell N:line:column` for a notebook (as ruff and
//! nbQA write them), and a [`SourceSpan`] with the position in the file as
//! stored.

use std::path::Path;

use caiclust_probe::SourceSpan;
use rustpython_parser::ast::{Stmt, Suite};
use rustpython_parser::text_size::TextSize;
use rustpython_parser::Parse;

use super::notebook::Notebook;
use super::ScriptError;

/// The Python text of one script or notebook, with its line starts.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    line_starts: Vec<usize>,
    /// The notebook the text comes from: its cells and file positions.
    pub notebook: Option<&'a Notebook>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            path,
            text,
            line_starts,
            notebook: None,
        }
    }

    /// The code cells of a notebook.
    pub fn notebook(path: &'a Path, notebook: &'a Notebook) -> Self {
        Self {
            notebook: Some(notebook),
            ..Self::new(path, &notebook.code)
        }
    }

    /// Parse the text: the whole file as one module, or each cell of a
    /// notebook on its own (as Jupyter compiles them), the statements in
    /// order.
    pub fn parse(&self) -> Result<Vec<Stmt>, ScriptError> {
        let name = self.path.display().to_string();
        let err = |e: rustpython_parser::ParseError| {
            let span = self.span(e.offset.to_usize());
            ScriptError::Syntax {
                path: self.path.to_path_buf(),
                cell: span.cell,
                line: span.line,
                column: span.column,
                message: e.error.to_string(),
            }
        };
        match self.notebook {
            None => Suite::parse(self.text, &name).map_err(err),
            Some(nb) => {
                let mut all = Vec::new();
                for cell in &nb.cells {
                    let code = &self.text[cell.start..cell.start + cell.len];
                    let offset = TextSize::try_from(cell.start).unwrap_or_default();
                    all.extend(Suite::parse_starts_at(code, &name, offset).map_err(err)?);
                }
                Ok(all)
            }
        }
    }

    /// 1-based line and column (in characters) of a byte offset in the
    /// text (for a notebook: in all its code cells one after the other).
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

    /// Where a byte offset is: line and column in the script or the cell,
    /// the cell, and for a notebook the place in the file's own text.
    pub fn span(&self, offset: usize) -> SourceSpan {
        let (line, column) = self.position(offset);
        let mut span = SourceSpan {
            path: self.path.to_path_buf(),
            line,
            column,
            cell: None,
            file_line: None,
            file_column: None,
        };
        if let Some((nb, (cell, cell_line))) = self
            .notebook
            .and_then(|nb| nb.cell_of(line).map(|c| (nb, c)))
        {
            let (file_line, file_column) = nb.file_position(cell, cell_line, column);
            span.line = cell_line;
            span.cell = Some(cell.number);
            span.file_line = Some(file_line);
            span.file_column = Some(file_column);
        }
        span
    }

    /// `path:line:column`, or `path:cell N:line:column` in a notebook. A
    /// bare file name gets a `./` so that every output format recognises
    /// it as a file.
    pub fn location(&self, offset: usize) -> String {
        let s = self.span(offset);
        match s.cell {
            Some(cell) => format!(
                "{}:cell {cell}:{}:{}",
                display_path(self.path),
                s.line,
                s.column
            ),
            None => format!("{}:{}:{}", display_path(self.path), s.line, s.column),
        }
    }

    /// `path:line` or `path:cell N:line`, for evidence.
    pub fn line_location(&self, offset: usize) -> String {
        let s = self.span(offset);
        match s.cell {
            Some(cell) => format!("{}:cell {cell}:{}", display_path(self.path), s.line),
            None => format!("{}:{}", display_path(self.path), s.line),
        }
    }

    /// `line 3` or `cell 2, line 3`, for messages.
    pub fn line_label(&self, offset: usize) -> String {
        let s = self.span(offset);
        match s.cell {
            Some(cell) => format!("cell {cell}, line {}", s.line),
            None => format!("line {}", s.line),
        }
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
        let span = s.span(5);
        assert_eq!((span.line, span.column, span.cell), (2, 2, None));
        assert_eq!(span.file_position(), (2, 2));
    }

    #[test]
    fn bare_names_get_a_folder() {
        assert_eq!(display_path(Path::new("x.py")), "./x.py");
        assert_eq!(display_path(Path::new("d/x.py")), "d/x.py");
    }

    #[test]
    fn notebook_places_map_to_cells_and_file_lines() {
        // Cell 1 is Markdown; cells 2 and 3 are code; cell 3 is one string.
        let raw = concat!(
            "{\"cells\": [\n",
            " {\"cell_type\": \"markdown\", \"metadata\": {}, \"source\": [\"# Title\"]},\n",
            " {\"cell_type\": \"code\", \"metadata\": {}, \"source\": [\n",
            "   \"%matplotlib inline\\n\",\n",
            "   \"import os\\n\",\n",
            "   \"x = \\\"é\\\"; y = os.sep\"\n",
            " ]},\n",
            " {\"cell_type\": \"code\", \"metadata\": {}, \"source\": \"a = 1\\nb = x\"}\n",
            "], \"metadata\": {}, \"nbformat\": 4, \"nbformat_minor\": 5}\n"
        );
        let nb = Notebook::read(Path::new("n.ipynb"), raw.to_string()).unwrap();
        assert_eq!(
            nb.code,
            "pass\nimport os\nx = \"é\"; y = os.sep\na = 1\nb = x\n"
        );
        let s = Source::notebook(Path::new("n.ipynb"), &nb);
        assert_eq!(s.parse().unwrap().len(), 6);
        // `y` on the third line of cell 2.
        let y = nb.code.find("y =").unwrap();
        let span = s.span(y);
        assert_eq!((span.cell, span.line, span.column), (Some(2), 3, 10));
        // In the file: line 6, after `   "x = \"é\"; ` (the escapes widen it).
        let (fl, fc) = span.file_position();
        let file_line = raw.lines().nth(fl - 1).unwrap();
        assert_eq!(fl, 6);
        assert!(
            file_line
                .chars()
                .skip(fc - 1)
                .collect::<String>()
                .starts_with("y = os.sep"),
            "{file_line} @ {fc}"
        );
        assert_eq!(s.location(y), "./n.ipynb:cell 2:3:10");
        // `b` in cell 3, stored as one string with `\n` in it.
        let b = nb.code.rfind("b = x").unwrap();
        let span = s.span(b);
        assert_eq!((span.cell, span.line, span.column), (Some(3), 2, 1));
        let (fl, fc) = span.file_position();
        let file_line = raw.lines().nth(fl - 1).unwrap();
        assert!(
            file_line
                .chars()
                .skip(fc - 1)
                .collect::<String>()
                .starts_with("b = x"),
            "{file_line} @ {fc}"
        );
        assert_eq!(s.line_label(b), "cell 3, line 2");
    }

    #[test]
    fn a_syntax_error_names_its_cell() {
        let raw = r#"{"nbformat": 4, "metadata": {}, "cells": [
            {"cell_type": "code", "source": ["x = 1\n"]},
            {"cell_type": "code", "source": ["y = 2\n", "def f(:\n"]}]}"#;
        let nb = Notebook::read(Path::new("n.ipynb"), raw.to_string()).unwrap();
        let e = Source::notebook(Path::new("n.ipynb"), &nb)
            .parse()
            .unwrap_err();
        let ScriptError::Syntax { cell, line, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((*cell, *line), (Some(2), 2));
        assert!(e.to_string().starts_with("n.ipynb:cell 2:2:"), "{e}");
    }
}
