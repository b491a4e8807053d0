//! Jupyter notebooks (nbformat 4): the code cells as one Python text, with
//! IPython's own syntax (`%magic`, `!shell`, `x = !cmd`, `obj?`, cell
//! magics) replaced by `pass` so that the real Python grammar reads the
//! rest; and the way back from a place in that text to the cell, the line
//! in the cell, and the line and column of the `.ipynb` file's own text.
//!
//! Every cell runs in the kernel's one `__main__`, in the order shown, so
//! the rules see the cells as one module: a name imported in cell 1 is
//! known in cell 5. Each cell is parsed on its own (as Jupyter compiles it),
//! so a syntax error names its cell.

use std::path::Path;

use super::json::{self, Json, JsonStr};
use super::ScriptError;

/// Cell magics whose body is Python run as usual.
const PYTHON_CELL_MAGICS: &[&str] = &["time", "timeit", "capture", "prun", "debug"];

/// A notebook's code, ready to parse, and its map back to the file.
pub(crate) struct Notebook {
    /// Every code cell's code, in order, each ending with a newline.
    pub code: String,
    pub cells: Vec<CodeCell>,
    /// The file's text, and where its lines start.
    raw: String,
    raw_line_starts: Vec<usize>,
}

/// One code cell.
pub(crate) struct CodeCell {
    /// 1-based, counting every cell of the notebook.
    pub number: usize,
    /// Byte offset of the cell's code in [`Notebook::code`].
    pub start: usize,
    /// Byte length of the cell's code there.
    pub len: usize,
    /// 1-based line of [`Notebook::code`] where the cell starts.
    pub first_line: usize,
    /// The cell's source as stored (IPython syntax intact): same lines as
    /// its code.
    original: String,
    /// Where each stored piece of the source starts: (offset in
    /// `original`, offset of its first character in the file).
    pieces: Pieces,
}

impl Notebook {
    /// Read a notebook's text (already decoded from UTF-8).
    pub fn read(path: &Path, raw: String) -> Result<Self, ScriptError> {
        let mut raw_line_starts = vec![0];
        raw_line_starts.extend(raw.match_indices('\n').map(|(i, _)| i + 1));
        let doc = json::parse(&raw).map_err(|e| {
            let (line, column) = position_in(&raw, &raw_line_starts, e.offset);
            ScriptError::Notebook {
                path: path.to_path_buf(),
                position: Some((line, column)),
                message: format!("not valid JSON: {}", e.message),
            }
        })?;
        let fail = |message: String| ScriptError::Notebook {
            path: path.to_path_buf(),
            position: None,
            message,
        };
        if !matches!(doc, Json::Object(_)) {
            return Err(fail(format!(
                "the document is {}, not a notebook object",
                doc.kind()
            )));
        }
        match doc.get("nbformat") {
            Some(Json::Number(n)) if n == "4" => {}
            Some(Json::Number(n)) => {
                return Err(fail(format!(
                    "nbformat {n} is not supported, only 4 (`jupyter nbconvert --to notebook --nbformat 4` converts it)"
                )))
            }
            Some(other) => return Err(fail(format!("nbformat is {}, not a number", other.kind()))),
            None => return Err(fail("no nbformat version: not a Jupyter notebook".into())),
        }
        if let Some(language) = language(&doc) {
            if !language.eq_ignore_ascii_case("python") {
                return Err(fail(format!(
                    "a {language} notebook, not a Python one (metadata names its language)"
                )));
            }
        }
        let Some(Json::Array(cells)) = doc.get("cells") else {
            return Err(fail("no `cells` array".into()));
        };
        let mut code = String::new();
        let mut out = Vec::new();
        let mut line = 1;
        for (i, cell) in cells.iter().enumerate() {
            let number = i + 1;
            let kind = cell.get("cell_type").and_then(Json::as_str);
            let Some(kind) = kind else {
                return Err(fail(format!("cell {number} has no `cell_type`")));
            };
            if kind != "code" {
                continue;
            }
            let (original, pieces) = source_of(cell).map_err(|what| {
                fail(format!(
                    "cell {number}: `source` is {what}, expected a string or an array of strings"
                ))
            })?;
            let mut cell_code = neutralise(&original);
            if !cell_code.ends_with('\n') {
                cell_code.push('\n');
            }
            let start = code.len();
            code.push_str(&cell_code);
            out.push(CodeCell {
                number,
                start,
                len: cell_code.len(),
                first_line: line,
                original,
                pieces,
            });
            line += cell_code.matches('\n').count();
        }
        Ok(Notebook {
            code,
            cells: out,
            raw,
            raw_line_starts,
        })
    }

    /// The cell holding 1-based `line` of [`Notebook::code`], and the line
    /// within the cell.
    pub fn cell_of(&self, line: usize) -> Option<(&CodeCell, usize)> {
        let i = self.cells.partition_point(|c| c.first_line <= line);
        let cell = self.cells.get(i.checked_sub(1)?)?;
        Some((cell, line - cell.first_line + 1))
    }

    /// The 1-based line and column in the file's text of a place in a cell
    /// (1-based line and column, in characters).
    pub fn file_position(&self, cell: &CodeCell, line: usize, column: usize) -> (usize, usize) {
        let text = &cell.original;
        let line_start = if line <= 1 {
            0
        } else {
            text.match_indices('\n')
                .nth(line - 2)
                .map_or(text.len(), |(i, _)| i + 1)
        };
        let line_text = &text[line_start..];
        let line_text = line_text.split('\n').next().unwrap_or("");
        let within: usize = line_text
            .chars()
            .take(column.saturating_sub(1))
            .map(char::len_utf8)
            .sum();
        let offset = line_start + within;
        let piece = cell
            .pieces
            .iter()
            .rev()
            .find(|(at, _)| *at <= offset)
            .or(cell.pieces.first());
        let Some(&(at, raw_start)) = piece else {
            return (1, 1);
        };
        let raw = json::raw_offset(&self.raw, raw_start, offset.saturating_sub(at));
        position_in(&self.raw, &self.raw_line_starts, raw)
    }
}

/// 1-based line and column (characters) of a byte offset.
fn position_in(text: &str, line_starts: &[usize], offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let line = line_starts.partition_point(|&s| s <= offset);
    let start = line_starts[line - 1];
    let column = text.get(start..offset).map_or(0, |s| s.chars().count());
    (line, column + 1)
}

/// The language the notebook's metadata names, if any.
fn language(doc: &Json) -> Option<&str> {
    let meta = doc.get("metadata")?;
    meta.get("kernelspec")
        .and_then(|k| k.get("language"))
        .and_then(Json::as_str)
        .or_else(|| {
            meta.get("language_info")
                .and_then(|l| l.get("name"))
                .and_then(Json::as_str)
        })
}

/// Where each stored piece of a cell's source starts: (offset in the
/// joined source, offset in the file).
type Pieces = Vec<(usize, usize)>;

/// A cell's source (a string, or an array of strings joined) and where
/// each piece is in the file; `Err(kind)` for anything else.
fn source_of(cell: &Json) -> Result<(String, Pieces), &'static str> {
    let mut text = String::new();
    let mut pieces = Vec::new();
    let mut add = |s: &JsonStr| {
        pieces.push((text.len(), s.raw_start));
        text.push_str(&s.value);
    };
    match cell.get("source") {
        None => {}
        Some(Json::Str(s)) => add(s),
        Some(Json::Array(items)) => {
            for item in items {
                match item {
                    Json::Str(s) => add(s),
                    other => return Err(other.kind()),
                }
            }
        }
        Some(other) => return Err(other.kind()),
    }
    Ok((text, pieces))
}

/// Replace IPython syntax with `pass` (same indentation, same number of
/// lines) so that the Python grammar reads the cell. Only lines that
/// start a logical line count: a `%` inside brackets or a string is
/// Python.
pub(crate) fn neutralise(source: &str) -> String {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    // A cell magic: `%%time` keeps its Python body, `%%bash` has none.
    if let Some(first) = lines.iter().position(|l| !l.trim().is_empty()) {
        if let Some(magic) = lines[first].trim_start().strip_prefix("%%") {
            let name = magic.split_whitespace().next().unwrap_or("");
            let python = PYTHON_CELL_MAGICS.contains(&name);
            let mut out = String::with_capacity(source.len());
            for (i, l) in lines.iter().enumerate() {
                if i == first || !python {
                    // Not Python: a line that does nothing, so that lines
                    // still count the same.
                    out.push_str("pass");
                    out.push_str(line_ending(l));
                } else {
                    out.push_str(l);
                }
            }
            // Only the first line was the magic: neutralise the body's
            // own line magics too.
            return if python { neutralise(&out) } else { out };
        }
    }
    let mut out = String::with_capacity(source.len());
    let mut state = Scan::default();
    for l in lines {
        if state.at_logical_start() && is_ipython_line(l) {
            let indent: String = l.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
            out.push_str(&indent);
            out.push_str("pass");
            out.push_str(line_ending(l));
            continue;
        }
        state.line(l);
        out.push_str(l);
    }
    out
}

fn line_ending(l: &str) -> &str {
    if l.ends_with("\r\n") {
        "\r\n"
    } else if l.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// `%magic`, `!cmd`, `?obj`, `obj?`, `x = !cmd`, `x = %magic`.
fn is_ipython_line(l: &str) -> bool {
    let t = l.trim();
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    if t.starts_with('%') || t.starts_with('!') || t.starts_with('?') {
        return true;
    }
    // Help: `np.sum?`, `np.sum??` (not inside a comment).
    if t.ends_with('?') && !t.contains('#') {
        return true;
    }
    // `files = !ls`, `a, b = %sx ls`: Python has no `= !` or `= %`.
    if let Some((left, right)) = t.split_once('=') {
        let right = right.trim_start();
        let left_ok = !left.is_empty()
            && left
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | ',' | ' ' | '\t' | '.'));
        if left_ok && (right.starts_with('!') || right.starts_with('%')) {
            return true;
        }
    }
    false
}

/// Enough of Python's tokenizer to know where logical lines start:
/// open brackets, open strings, backslash continuations.
#[derive(Default)]
struct Scan {
    depth: usize,
    /// The quote of an open string and whether it is triple.
    string: Option<(char, bool)>,
    continued: bool,
}

impl Scan {
    fn at_logical_start(&self) -> bool {
        self.depth == 0 && self.string.is_none() && !self.continued
    }

    fn line(&mut self, l: &str) {
        self.continued = false;
        let chars: Vec<char> = l.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if let Some((q, triple)) = self.string {
                if c == '\\' {
                    i += 2;
                    continue;
                }
                if c == q
                    && (!triple || (chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q)))
                {
                    self.string = None;
                    i += if triple { 3 } else { 1 };
                    continue;
                }
                if c == '\n' && !triple {
                    // An unterminated one-line string: Python's error.
                    self.string = None;
                }
                i += 1;
                continue;
            }
            match c {
                '#' => break,
                '"' | '\'' => {
                    let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
                    self.string = Some((c, triple));
                    i += if triple { 3 } else { 1 };
                    continue;
                }
                '(' | '[' | '{' => self.depth += 1,
                ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
                '\\' if chars[i + 1..].iter().all(|c| *c == '\n' || *c == '\r') => {
                    self.continued = true;
                }
                _ => {}
            }
            i += 1;
        }
        if matches!(self.string, Some((_, false))) {
            self.string = None;
        }
    }
}

/// Is this file a notebook (by its extension)?
pub(crate) fn is_notebook(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ipynb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipython_syntax_becomes_pass_and_keeps_lines() {
        let src = "%matplotlib inline\nimport os\nfiles = !ls\nfor f in files:\n    !echo $f\n    os.path.exists?\nx = (1\n     % 2)\ns = '''\n%not magic\n'''\n";
        let want = "pass\nimport os\npass\nfor f in files:\n    pass\n    pass\nx = (1\n     % 2)\ns = '''\n%not magic\n'''\n";
        assert_eq!(neutralise(src), want);
        assert_eq!(neutralise("%%time\nx = 1\n%who\n"), "pass\nx = 1\npass\n");
        assert_eq!(neutralise("%%bash\n  ls -l\necho hi"), "pass\npass\npass");
        // A continued line is not a new logical line.
        assert_eq!(neutralise("y = 3 \\\n% 2\n"), "y = 3 \\\n% 2\n");
    }
}
