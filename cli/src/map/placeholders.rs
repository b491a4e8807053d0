//! GNU parallel's replacement strings in a command template: `{}` `{.}`
//! `{/}` `{//}` `{/.}`, their positional forms `{1}` `{2.}` `{-1/}` ...,
//! `{#}` (the job's sequence number), `{%}` (its slot, 1..=jobs) and `{##}`
//! (the number of jobs; GNU parallel has it with `--plus`).
//!
//! The transformations are GNU parallel's own: `{.}` removes
//! `\.[^/.]*$`, `{/}` removes `^.*/`, `{//}` is Perl's
//! `File::Basename::dirname`. A template without any replacement string
//! gets the inputs appended, one argument each.

use caiclust_core::task::shell_quote;

/// What a replacement string does to an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `{}`: the value as it is.
    Whole,
    /// `{.}`: without its extension.
    NoExtension,
    /// `{/}`: its base name.
    Basename,
    /// `{//}`: its folder.
    Dirname,
    /// `{/.}`: its base name without extension.
    BasenameNoExtension,
}

impl Transform {
    /// Apply to one value.
    pub fn apply(self, value: &str) -> String {
        match self {
            Transform::Whole => value.to_string(),
            Transform::NoExtension => no_extension(value).to_string(),
            Transform::Basename => basename(value).to_string(),
            Transform::Dirname => dirname(value),
            Transform::BasenameNoExtension => no_extension(basename(value)).to_string(),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Transform::Whole => "",
            Transform::NoExtension => ".",
            Transform::Basename => "/",
            Transform::Dirname => "//",
            Transform::BasenameNoExtension => "/.",
        }
    }
}

/// One replacement string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// An input value: `pos` is the input source (1-based; negative counts
    /// from the last), `None` means all of them.
    Arg {
        pos: Option<i64>,
        transform: Transform,
    },
    /// `{#}`
    Seq,
    /// `{%}`
    Slot,
    /// `{##}`
    Total,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// What a job substitutes into the template.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// One value per input source.
    pub args: &'a [String],
    pub seq: u64,
    pub slot: usize,
    pub total: u64,
}

/// A parsed command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Vec<Segment>>,
    has_placeholder: bool,
    uses_slot: bool,
}

impl Template {
    /// Parse the command words; `sources` is the number of input sources,
    /// against which positional replacement strings are checked.
    pub fn parse(words: &[String], sources: usize) -> Result<Template, String> {
        let mut parsed = Vec::with_capacity(words.len());
        let mut has_placeholder = false;
        let mut uses_slot = false;
        for word in words {
            let segments = parse_word(word);
            for s in &segments {
                if let Segment::Placeholder(p) = s {
                    has_placeholder = true;
                    uses_slot |= *p == Placeholder::Slot;
                    if let Placeholder::Arg {
                        pos: Some(pos),
                        transform,
                    } = *p
                    {
                        if resolve(pos, sources).is_none() {
                            return Err(format!(
                                "the replacement string {{{pos}{}}} in '{word}' names input source {pos}, but there {} {sources}",
                                transform.suffix(),
                                if sources == 1 { "is" } else { "are" }
                            ));
                        }
                    }
                }
            }
            parsed.push(segments);
        }
        Ok(Template {
            words: parsed,
            has_placeholder,
            uses_slot,
        })
    }

    /// Does the template contain any replacement string? (Without one, the
    /// inputs are appended.)
    pub fn has_placeholder(&self) -> bool {
        self.has_placeholder
    }

    /// Does it use `{%}`?
    pub fn uses_slot(&self) -> bool {
        self.uses_slot
    }

    /// The program and arguments (no shell): a word that is exactly `{}`
    /// (or `{.}` ...) with several input sources becomes one argument per
    /// source; inside a longer word the values are joined by spaces.
    pub fn argv(&self, v: &Values<'_>) -> Vec<String> {
        let mut out = Vec::with_capacity(self.words.len() + v.args.len());
        for word in &self.words {
            if let [Segment::Placeholder(Placeholder::Arg {
                pos: None,
                transform,
            })] = word.as_slice()
            {
                out.extend(v.args.iter().map(|a| transform.apply(a)));
                continue;
            }
            let mut s = String::new();
            for seg in word {
                match seg {
                    Segment::Literal(l) => s.push_str(l),
                    Segment::Placeholder(p) => s.push_str(&value_of(*p, v, false)),
                }
            }
            out.push(s);
        }
        if !self.has_placeholder {
            out.extend(v.args.iter().cloned());
        }
        out
    }

    /// A shell command line: the words joined by spaces (as typed, so they
    /// may hold pipes and redirections), each substituted value quoted.
    pub fn shell(&self, v: &Values<'_>) -> String {
        let mut words: Vec<String> = Vec::with_capacity(self.words.len() + 1);
        for word in &self.words {
            let mut s = String::new();
            for seg in word {
                match seg {
                    Segment::Literal(l) => s.push_str(l),
                    Segment::Placeholder(p) => s.push_str(&value_of(*p, v, true)),
                }
            }
            words.push(s);
        }
        if !self.has_placeholder {
            words.extend(v.args.iter().map(|a| shell_quote(a)));
        }
        words.join(" ")
    }
}

/// The 0-based index of input source `pos` among `n`.
fn resolve(pos: i64, n: usize) -> Option<usize> {
    let n = i64::try_from(n).ok()?;
    let i = if pos > 0 { pos - 1 } else { n + pos };
    (pos != 0 && (0..n).contains(&i)).then_some(i as usize)
}

fn value_of(p: Placeholder, v: &Values<'_>, quote: bool) -> String {
    let q = |s: String| if quote { shell_quote(&s) } else { s };
    match p {
        Placeholder::Seq => v.seq.to_string(),
        Placeholder::Slot => v.slot.to_string(),
        Placeholder::Total => v.total.to_string(),
        Placeholder::Arg {
            pos: None,
            transform,
        } => v
            .args
            .iter()
            .map(|a| q(transform.apply(a)))
            .collect::<Vec<_>>()
            .join(" "),
        Placeholder::Arg {
            pos: Some(pos),
            transform,
        } => resolve(pos, v.args.len())
            .and_then(|i| v.args.get(i))
            .map(|a| q(transform.apply(a)))
            .unwrap_or_default(),
    }
}

/// Split a word into literal text and replacement strings; a brace that
/// does not start one (`{print $1}`) is literal.
fn parse_word(word: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = word;
    while let Some(i) = rest.find('{') {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        match match_placeholder(tail) {
            Some((p, len)) => {
                if !lit.is_empty() {
                    out.push(Segment::Literal(std::mem::take(&mut lit)));
                }
                out.push(Segment::Placeholder(p));
                rest = &tail[len..];
            }
            None => {
                lit.push('{');
                rest = &tail[1..];
            }
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Segment::Literal(lit));
    }
    out
}

/// A replacement string at the start of `s` (which starts with `{`), and
/// its length.
fn match_placeholder(s: &str) -> Option<(Placeholder, usize)> {
    let close = s.find('}')?;
    let inner = &s[1..close];
    let len = close + 1;
    let fixed = match inner {
        "#" => Some(Placeholder::Seq),
        "%" => Some(Placeholder::Slot),
        "##" => Some(Placeholder::Total),
        _ => None,
    };
    if let Some(p) = fixed {
        return Some((p, len));
    }
    let digits_end = inner
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(inner.len(), |(i, _)| i);
    let (num, suffix) = inner.split_at(digits_end);
    let pos = match num {
        "" => None,
        "-" => return None,
        n => Some(n.parse::<i64>().ok().filter(|&p| p != 0)?),
    };
    let transform = match suffix {
        "" => Transform::Whole,
        "." => Transform::NoExtension,
        "/" => Transform::Basename,
        "//" => Transform::Dirname,
        "/." => Transform::BasenameNoExtension,
        _ => return None,
    };
    Some((Placeholder::Arg { pos, transform }, len))
}

/// `s:\.[^/.]*$::`
fn no_extension(s: &str) -> &str {
    match s.rfind('.') {
        Some(i) if !s[i + 1..].contains('/') => &s[..i],
        _ => s,
    }
}

/// `s:.*/::`
fn basename(s: &str) -> &str {
    match s.rfind('/') {
        Some(i) => &s[i + 1..],
        None => s,
    }
}

/// Perl's `s{(.)/*\z}{$1}s`: trailing slashes off, at least one character
/// kept.
fn strip_trailing_slashes(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        &s[..s.len().min(1)]
    } else {
        t
    }
}

/// Perl's `File::Basename::fileparse` on Unix: (folder with its trailing
/// slash, or `./`; base name).
fn fileparse(s: &str) -> (&str, &str) {
    match s.rfind('/') {
        Some(i) => (&s[..=i], &s[i + 1..]),
        None => ("./", s),
    }
}

/// Perl's `File::Basename::dirname` on Unix.
fn dirname(s: &str) -> String {
    let (dir, base) = fileparse(s);
    let mut dir = strip_trailing_slashes(dir);
    if base.is_empty() {
        let (d2, _) = fileparse(dir);
        dir = strip_trailing_slashes(d2);
    }
    dir.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(words: &[&str], sources: usize) -> Template {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        Template::parse(&w, sources).expect("parses")
    }

    fn vals(args: &[String]) -> Values<'_> {
        Values {
            args,
            seq: 7,
            slot: 2,
            total: 9,
        }
    }

    #[test]
    fn transforms_follow_gnu_parallel() {
        // (input, {.}, {/}, {//}, {/.}) as GNU parallel 20221122 prints them.
        let cases = [
            (".bashrc", "", ".bashrc", ".", ""),
            ("a/b.tar.gz", "a/b.tar", "b.tar.gz", "a", "b.tar"),
            ("dir.x/file", "dir.x/file", "file", "dir.x", "file"),
            ("/abs/f.txt", "/abs/f", "f.txt", "/abs", "f"),
            ("f.", "f", "f.", ".", "f"),
            ("./x.y", "./x", "x.y", ".", "x"),
            ("a/b/", "a/b/", "", "a", ""),
            ("/", "/", "", "/", ""),
            ("", "", "", ".", ""),
            ("a//b.c", "a//b", "b.c", "a", "b"),
            ("//x", "//x", "x", "/", "x"),
        ];
        for (input, noext, base, dir, basenoext) in cases {
            assert_eq!(
                Transform::NoExtension.apply(input),
                noext,
                "{{.}} of {input:?}"
            );
            assert_eq!(Transform::Basename.apply(input), base, "{{/}} of {input:?}");
            assert_eq!(Transform::Dirname.apply(input), dir, "{{//}} of {input:?}");
            assert_eq!(
                Transform::BasenameNoExtension.apply(input),
                basenoext,
                "{{/.}} of {input:?}"
            );
        }
    }

    #[test]
    fn words_keep_unknown_braces_literal() {
        let tpl = t(&["awk", "{print $1}", "x{}y", "{", "{0}", "{-}", "{1x}"], 1);
        let args = ["in".to_string()];
        assert_eq!(
            tpl.argv(&vals(&args)),
            ["awk", "{print $1}", "xiny", "{", "{0}", "{-}", "{1x}"]
        );
    }

    #[test]
    fn no_placeholder_appends_every_source() {
        let tpl = t(&["echo", "-n"], 2);
        assert!(!tpl.has_placeholder());
        let args = ["a b".to_string(), "c".to_string()];
        assert_eq!(tpl.argv(&vals(&args)), ["echo", "-n", "a b", "c"]);
        assert_eq!(tpl.shell(&vals(&args)), "echo -n 'a b' c");
    }

    #[test]
    fn seq_slot_total_and_positions() {
        let tpl = t(&["{#}/{##}", "{%}", "{2}", "{-1.}", "{1/}", "{}"], 2);
        assert!(tpl.uses_slot());
        let args = ["d/x.tif".to_string(), "y.z".to_string()];
        assert_eq!(
            tpl.argv(&vals(&args)),
            ["7/9", "2", "y.z", "y", "x.tif", "d/x.tif", "y.z"]
        );
        assert_eq!(tpl.shell(&vals(&args)), "7/9 2 y.z y x.tif d/x.tif y.z");
    }

    #[test]
    fn shell_quotes_values_not_the_template() {
        let tpl = t(&["echo", "{}", ">", "{.}.out"], 1);
        let args = ["it's a.txt".to_string()];
        assert_eq!(
            tpl.shell(&vals(&args)),
            r"echo 'it'\''s a.txt' > 'it'\''s a'.out"
        );
    }

    #[test]
    fn positions_beyond_the_sources_are_refused() {
        let w = vec!["echo".to_string(), "{3.}".to_string()];
        let e = Template::parse(&w, 2).unwrap_err();
        assert!(e.contains("{3.}") && e.contains("there are 2"), "{e}");
        let w = vec!["{-2}".to_string()];
        assert!(Template::parse(&w, 1).is_err());
        assert!(Template::parse(&w, 2).is_ok());
    }
}
