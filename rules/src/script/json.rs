//! A small JSON reader that remembers where each string starts in the
//! text, so that a notebook cell's code can be traced back to the line and
//! column of the `.ipynb` file that stores it. Strict RFC 8259 (no
//! comments, no trailing commas); nesting is bounded so that hostile input
//! cannot exhaust the stack.

/// A JSON value. Strings keep the byte offset of their first character
/// (just after the opening quote) in the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// The number as written.
    Number(String),
    Str(JsonStr),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A string and where its content starts in the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonStr {
    pub value: String,
    pub raw_start: usize,
}

impl Json {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(&s.value),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Why the text is not JSON, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonError {
    pub offset: usize,
    pub message: String,
}

/// Deepest nesting accepted (notebooks nest a handful of levels).
const MAX_DEPTH: usize = 128;

/// Parse one JSON document (surrounding whitespace allowed).
pub(crate) fn parse(text: &str) -> Result<Json, JsonError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.pos < p.bytes.len() {
        return Err(p.error("unexpected text after the JSON document"));
    }
    Ok(v)
}

/// The byte offset in `text` of the character `target` bytes into the
/// decoded content of the string literal whose content starts at
/// `raw_start`: escapes (`\n`, `\"`, `\u00e9`) take more room in the text
/// than in the value.
pub(crate) fn raw_offset(text: &str, raw_start: usize, target: usize) -> usize {
    let bytes = text.as_bytes();
    let mut raw = raw_start;
    let mut decoded = 0;
    while decoded < target && raw < bytes.len() {
        let (raw_len, decoded_len) = match bytes[raw] {
            b'"' => break,
            b'\\' => match bytes.get(raw + 1) {
                Some(b'u') => {
                    let code = hex4(bytes, raw + 2);
                    match code {
                        Some(hi @ 0xD800..=0xDBFF)
                            if bytes.get(raw + 6) == Some(&b'\\')
                                && bytes.get(raw + 7) == Some(&b'u')
                                && hex4(bytes, raw + 8)
                                    .is_some_and(|lo| (0xDC00..=0xDFFF).contains(&lo)) =>
                        {
                            let _ = hi;
                            (12, 4)
                        }
                        Some(c) => (6, char::from_u32(c).map_or(3, char::len_utf8)),
                        None => (2, 1),
                    }
                }
                _ => (2, 1),
            },
            _ => {
                let c = text[raw..].chars().next().map_or(1, char::len_utf8);
                (c, c)
            }
        };
        raw += raw_len;
        decoded += decoded_len;
    }
    raw.min(bytes.len())
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let s = bytes.get(at..at + 4)?;
    let s = std::str::from_utf8(s).ok()?;
    u32::from_str_radix(s, 16).ok()
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            offset: self.pos.min(self.bytes.len()),
            message: message.into(),
        }
    }

    fn ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.bytes.get(self.pos) {
            None => Err(self.error("unexpected end of the text")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error(format!(
                "expected a value, found '{}'",
                self.text[self.pos..].chars().next().unwrap_or(' ')
            ))),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - s
        };
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.error("malformed number")),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("malformed number"));
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("malformed number"));
            }
        }
        Ok(Json::Number(self.text[start..self.pos].to_string()))
    }

    fn string(&mut self) -> Result<JsonStr, JsonError> {
        // At the opening quote.
        self.pos += 1;
        let raw_start = self.pos;
        let mut value = String::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(JsonStr { value, raw_start });
                }
                b'\\' => {
                    let esc = self.bytes.get(self.pos + 1).copied();
                    let simple = match esc {
                        Some(b'"') => Some('"'),
                        Some(b'\\') => Some('\\'),
                        Some(b'/') => Some('/'),
                        Some(b'b') => Some('\u{8}'),
                        Some(b'f') => Some('\u{c}'),
                        Some(b'n') => Some('\n'),
                        Some(b'r') => Some('\r'),
                        Some(b't') => Some('\t'),
                        _ => None,
                    };
                    if let Some(c) = simple {
                        value.push(c);
                        self.pos += 2;
                    } else if esc == Some(b'u') {
                        let c = self.unicode_escape()?;
                        value.push(c);
                    } else {
                        self.pos += 1;
                        return Err(self.error("invalid escape in a string"));
                    }
                }
                0x00..=0x1F => return Err(self.error("control character in a string")),
                _ => {
                    // Copy the run up to the next quote, backslash or
                    // control character (the text is UTF-8 already).
                    let start = self.pos;
                    while self
                        .bytes
                        .get(self.pos)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        self.pos += 1;
                    }
                    value.push_str(&self.text[start..self.pos]);
                }
            }
        }
    }

    /// `\uXXXX`, with a surrogate pair when one follows.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let Some(hi) = hex4(self.bytes, self.pos + 2) else {
            self.pos += 1;
            return Err(self.error("malformed \\u escape"));
        };
        self.pos += 6;
        if (0xD800..=0xDBFF).contains(&hi) {
            let lo = (self.bytes.get(self.pos) == Some(&b'\\')
                && self.bytes.get(self.pos + 1) == Some(&b'u'))
            .then(|| hex4(self.bytes, self.pos + 2))
            .flatten()
            .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
            let Some(lo) = lo else {
                return Err(self.error("unpaired surrogate in a \\u escape"));
            };
            self.pos += 6;
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return char::from_u32(c).ok_or_else(|| self.error("invalid \\u escape"));
        }
        char::from_u32(hi).ok_or_else(|| self.error("unpaired surrogate in a \\u escape"))
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a member name (a string) in an object"));
            }
            let key = self.string()?.value;
            self.ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error("expected ':' after a member name"));
            }
            self.pos += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((key, v));
            self.ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_string_positions() {
        let text = r#"{"a": [1, -2.5e3, true, null], "s": "x\"\u00e9\ud83d\ude00y"}"#;
        let v = parse(text).unwrap();
        let Some(Json::Str(s)) = v.get("s") else {
            panic!("{v:?}")
        };
        assert_eq!(s.value, "x\"é😀y");
        assert_eq!(&text[s.raw_start..s.raw_start + 1], "x");
        // 'y' is after x (1), " (1), é (2) and 😀 (4): 8 decoded bytes.
        let y = raw_offset(text, s.raw_start, 8);
        assert_eq!(&text[y..y + 1], "y");
        assert_eq!(
            v.get("a"),
            Some(&Json::Array(vec![
                Json::Number("1".into()),
                Json::Number("-2.5e3".into()),
                Json::Bool(true),
                Json::Null
            ]))
        );
    }

    #[test]
    fn errors_are_located_not_panics() {
        for (text, offset) in [
            ("{\"a\": }", 6),
            ("[1, 2", 5),
            ("{\"a\" 1}", 5),
            ("\"abc", 4),
            ("[01]", 2),
            ("{} x", 3),
            ("\"\\ud800\"", 7),
            ("", 0),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e:?}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(parse(&deep).unwrap_err().message, "nested too deeply");
    }
}
