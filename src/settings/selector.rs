//! Calico selector grammar, validation only.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | "all()" | "global()" | "has(" key ")"
//!          | key ( "==" str | "!=" str | "in" set | "not" "in" set
//!                | "contains" str | "starts" "with" str | "ends" "with" str )
//!            (a two-word operator may be written as one word: "notin", "startswith", "endswith")
//! set     := "{" [ str ( "," str )* [ "," ] ] "}"
//! str     := '...' | "..."            (no escapes, no control characters)
//! key     := Kubernetes label key: [prefix "/"] name
//! ```
//! Whitespace is spaces and tabs only. Input length and nesting depth are bounded, and the parser tracks depth
//! explicitly, so hostile input (`((((...`, `!!!!...`) cannot overflow the stack.

/// Longest accepted selector, in characters (the limit of Calico's v3.32 BGPPeer CRD).
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Deepest accepted nesting of parentheses and `!`.
pub const MAX_DEPTH: usize = 32;

/// Why a selector does not parse. `position` is 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct SelectorError {
    /// 1-based character position of the problem.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// Validate a Calico selector. `Ok(())` when it is syntactically valid.
pub fn validate(selector: &str) -> Result<(), SelectorError> {
    // Bytes first (cheap; a character is at most 4 bytes), then characters, as the CRD counts them.
    if selector.len() > 4 * MAX_SELECTOR_LEN || selector.chars().count() > MAX_SELECTOR_LEN {
        return Err(SelectorError {
            position: 1,
            message: format!("the selector is longer than {MAX_SELECTOR_LEN} characters"),
        });
    }
    let mut parser = Parser {
        src: selector,
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    if parser.at_end() {
        return Err(parser.error("the selector is empty (use all() to select everything)"));
    }
    parser.expr()?;
    parser.skip_ws();
    if !parser.at_end() {
        return Err(parser.error("unexpected text after the end of the expression"));
    }
    Ok(())
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset into `src`, always on a char boundary.
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn error(&self, message: &str) -> SelectorError {
        let position = self.src.get(..self.pos).map_or(0, |s| s.chars().count()) + 1;
        let message = match self.peek() {
            Some(c) if !message.contains("near") => {
                let shown = super::problem::escape(&c.to_string());
                format!("{message} (near \"{shown}\")")
            }
            _ => message.to_string(),
        };
        SelectorError { position, message }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Consume `token` (after whitespace) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Consume the keyword `word` if it is next and not followed by an identifier character.
    fn eat_word(&mut self, word: &str) -> bool {
        self.eat_words(&[word])
    }

    /// A keyword, or a two-word operator as Calico's tokenizer reads it: the words with optional whitespace between
    /// them (`not in` or `notin`, `starts with` or `startswith`), and a word boundary after the last; nothing is
    /// consumed when it does not match.
    fn eat_words(&mut self, words: &[&str]) -> bool {
        let start = self.pos;
        for word in words {
            self.skip_ws();
            if !self.rest().starts_with(word) {
                self.pos = start;
                return false;
            }
            self.pos += word.len();
        }
        if self.rest().starts_with(is_ident_char) {
            self.pos = start;
            return false;
        }
        true
    }

    fn enter(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!(
                "the selector nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<(), SelectorError> {
        self.and()?;
        while self.eat("||") {
            self.and()?;
        }
        Ok(())
    }

    fn and(&mut self) -> Result<(), SelectorError> {
        self.unary()?;
        while self.eat("&&") {
            self.unary()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), SelectorError> {
        self.skip_ws();
        // `!=` never starts an operand, so a leading `!` is always negation here.
        if self.eat("!") {
            self.enter()?;
            self.unary()?;
            self.depth -= 1;
            return Ok(());
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<(), SelectorError> {
        self.skip_ws();
        if self.eat("(") {
            self.enter()?;
            self.expr()?;
            if !self.eat(")") {
                return Err(self.error("expected \")\""));
            }
            self.depth -= 1;
            return Ok(());
        }
        let start = self.pos;
        let ident_len = self
            .rest()
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(self.rest().len());
        if ident_len == 0 {
            return Err(self.error("expected a label key, has(), all(), global(), \"!\" or \"(\""));
        }
        let ident = &self.rest()[..ident_len];
        self.pos += ident_len;
        // Function call syntax: all(), global(), has(key). Calico's tokenizer recognises a call only when "(" follows
        // the name directly: `has (key)` is a label named `has` followed by a parenthesis, which its parser refuses.
        let mut lookahead = self.pos;
        while matches!(self.src.as_bytes().get(lookahead), Some(b' ' | b'\t')) {
            lookahead += 1;
        }
        if lookahead > self.pos
            && self.src.as_bytes().get(lookahead) == Some(&b'(')
            && matches!(ident, "all" | "global" | "has")
        {
            return Err(self.error(&format!(
                "write {ident}( with no space before \"(\" (Calico reads `{ident} (` as a label)"
            )));
        }
        if self.src.as_bytes().get(self.pos) == Some(&b'(') {
            self.pos += 1;
            return match ident {
                "all" | "global" => {
                    if self.eat(")") {
                        Ok(())
                    } else {
                        Err(self.error(&format!("{ident}() takes no arguments")))
                    }
                }
                "has" => {
                    self.skip_ws();
                    self.label_key()?;
                    if self.eat(")") {
                        Ok(())
                    } else {
                        Err(self.error("expected \")\" after the label key in has(...)"))
                    }
                }
                _ => {
                    self.pos = start;
                    Err(self.error("unknown function (only all(), global() and has(key) exist)"))
                }
            };
        }
        self.pos = start;
        self.label_key()?;
        self.operator()
    }

    fn label_key(&mut self) -> Result<(), SelectorError> {
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(self.rest().len());
        let key = &self.rest()[..len];
        if key.is_empty() {
            return Err(self.error("expected a label key"));
        }
        if let Err(why) = check_label_key(key) {
            self.pos = start;
            return Err(self.error(&format!(
                "invalid label key \"{}\": {why}",
                super::problem::escape(key)
            )));
        }
        self.pos += len;
        Ok(())
    }

    fn operator(&mut self) -> Result<(), SelectorError> {
        self.skip_ws();
        if self.rest().starts_with('=') && !self.rest().starts_with("==") {
            return Err(self.error("use \"==\" for equality"));
        }
        if self.eat("==") || self.eat("!=") {
            return self.string();
        }
        if self.eat_word("in") || self.eat_words(&["not", "in"]) {
            return self.set();
        }
        if self.eat_word("contains")
            || self.eat_words(&["starts", "with"])
            || self.eat_words(&["ends", "with"])
        {
            return self.string();
        }
        if self.eat_word("not") {
            self.skip_ws();
            return Err(self.error("expected \"in\" after \"not\""));
        }
        if self.eat_word("starts") || self.eat_word("ends") {
            self.skip_ws();
            return Err(self.error("expected \"with\""));
        }
        Err(self
            .error("expected an operator (==, !=, in, not in, contains, starts with, ends with)"))
    }

    fn string(&mut self) -> Result<(), SelectorError> {
        self.skip_ws();
        let quote = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            _ => return Err(self.error("expected a quoted string ('...' or \"...\")")),
        };
        let body_start = self.pos + 1;
        let Some(len) = self.src.get(body_start..).and_then(|s| s.find(quote)) else {
            return Err(self.error("unterminated string"));
        };
        let body = self.src.get(body_start..body_start + len).unwrap_or("");
        if let Some(offset) = body.find(char::is_control) {
            self.pos = body_start + offset;
            return Err(self.error("control characters are not allowed in a string"));
        }
        self.pos = body_start + len + 1;
        Ok(())
    }

    fn set(&mut self) -> Result<(), SelectorError> {
        if !self.eat("{") {
            return Err(self.error("expected \"{\" to start a set of strings"));
        }
        if self.eat("}") {
            return Ok(());
        }
        loop {
            self.string()?;
            if self.eat("}") {
                return Ok(());
            }
            if !self.eat(",") {
                return Err(self.error("expected \",\" or \"}\" in a set"));
            }
            // A trailing comma, as Calico's parser allows.
            if self.eat("}") {
                return Ok(());
            }
        }
    }
}

/// Characters that may appear in a label key token.
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Kubernetes label key rules: optional DNS-1123 subdomain prefix (at most 253) and `/`, then a name of at most
/// 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
pub fn check_label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !super::values::is_dns1123_subdomain(prefix)
    {
        return Err("the prefix must be a lower-case DNS subdomain of at most 253 characters");
    }
    if name.is_empty() || name.len() > 63 {
        return Err("the name must be 1 to 63 characters");
    }
    let bytes = name.as_bytes();
    let edges_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !(edges_ok && inner_ok) {
        return Err("the name must be alphanumeric at both ends with only '-', '_' or '.' inside");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_selectors() {
        let cases = [
            "all()",
            "all( )",
            "global()",
            "has(rr)",
            "!has(rr)",
            "has( route-reflector )",
            "rack == 'a'",
            "rack == \"a\"",
            "rack != 'a'",
            "rack=='a'",
            "route-reflector == 'true'",
            "topology.kubernetes.io/zone == 'eu-1a'",
            "example.com/rr in {'a', 'b'}",
            "k in {}",
            "k in {\"a\"}",
            "k not in {'a','b'}",
            // As Calico's tokenizer and parser read them: two-word operators written as one, a trailing comma.
            "k notin {'a'}",
            "k startswith 'a'",
            "k endswith 'a'",
            "k in {'a',}",
            "k not  in {'a', 'b',}",
            "k contains 'x'",
            "k starts with 'pre'",
            "k ends with 'suf'",
            "has(a) && b == 'c'",
            "has(a) || b == 'c' && !has(d)",
            "!(a == 'b' || c == 'd')",
            "((a == 'b'))",
            "!!has(a)",
            "k == ''",
            "k == 'with space and ü'",
            "k == 'a\"b'",
            "k == \"a'b\"",
            "in == 'x'",
            "has(has)",
            "\thas(a)\t",
            "a_b.c-d == 'x'",
        ];
        for selector in cases {
            assert_eq!(validate(selector), Ok(()), "{selector}");
        }
    }

    #[test]
    fn invalid_selectors() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty"),
            ("   ", 4, "empty"),
            ("has(", 5, "expected a label key"),
            ("has(a", 6, "expected \")\""),
            ("has()", 5, "expected a label key"),
            ("all(x)", 5, "all() takes no arguments"),
            ("foo()", 1, "unknown function"),
            ("has (rr)", 4, "no space before"),
            ("all ()", 4, "no space before"),
            ("!global\t()", 8, "no space before"),
            ("rack = 'a'", 6, "use \"==\""),
            ("rack == a", 9, "quoted string"),
            ("rack == 'a", 9, "unterminated"),
            ("rack", 5, "expected an operator"),
            ("rack ==", 8, "quoted string"),
            ("k in ['a']", 6, "expected \"{\""),
            ("k in {'a' 'b'}", 11, "expected \",\" or \"}\""),
            ("k in {,}", 7, "quoted string"),
            ("k in {'a',,}", 11, "quoted string"),
            ("k notinx {'a'}", 3, "expected an operator"),
            ("k not {'a'}", 7, "expected \"in\""),
            ("k starts 'a'", 10, "expected \"with\""),
            ("has(a) &&", 10, "expected a label key"),
            ("has(a) & has(b)", 8, "unexpected text"),
            ("has(a) has(b)", 8, "unexpected text"),
            ("(has(a)", 8, "expected \")\""),
            ("has(a))", 7, "unexpected text"),
            ("-a == 'x'", 1, "invalid label key"),
            ("a- == 'x'", 1, "invalid label key"),
            ("Example.com/a == 'x'", 1, "invalid label key"),
            ("/a == 'x'", 1, "invalid label key"),
            ("a/b/c == 'x'", 1, "invalid label key"),
            ("k == 'a\nb'", 8, "control characters"),
            ("k == 'a'\n", 9, "unexpected text"),
            ("has(a)\0", 7, "unexpected text"),
            ("$(reboot)", 1, "expected a label key"),
            ("`id`", 1, "expected a label key"),
            ("has(a); rm -rf /", 7, "unexpected text"),
            ("k == 'x' || $(id)", 13, "expected a label key"),
        ];
        for (selector, position, text) in cases {
            let e = validate(selector).expect_err(selector);
            assert!(e.message.contains(text), "{selector:?}: {e}");
            assert_eq!(e.position, *position, "{selector:?}: {e}");
        }
    }

    #[test]
    fn bounds() {
        let long_name = format!("{} == 'x'", "a".repeat(64));
        assert!(
            validate(&long_name)
                .expect_err("63")
                .message
                .contains("1 to 63")
        );
        let ok_name = format!("{} == 'x'", "a".repeat(63));
        assert_eq!(validate(&ok_name), Ok(()));
        let too_long = format!("k == '{}'", "x".repeat(MAX_SELECTOR_LEN));
        assert!(
            validate(&too_long)
                .expect_err("long")
                .message
                .contains("longer than")
        );
        // Characters, not bytes, as Calico's CRD counts: 4096 characters of two bytes each are accepted.
        let wide = format!("k == '{}'", "ü".repeat(MAX_SELECTOR_LEN - 7));
        assert_eq!(wide.chars().count(), MAX_SELECTOR_LEN);
        assert_eq!(validate(&wide), Ok(()));
        let huge = "(".repeat(1_000_000);
        assert!(validate(&huge).is_err());
        let deep = format!(
            "{}has(a){}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(
            validate(&deep)
                .expect_err("deep")
                .message
                .contains("deeper")
        );
        let ok_deep = format!("{}has(a){}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(validate(&ok_deep), Ok(()));
        let bangs = format!("{}has(a)", "!".repeat(500));
        assert!(
            validate(&bangs)
                .expect_err("bangs")
                .message
                .contains("deeper")
        );
        let wide = vec!["has(a)"; 100].join(" && ");
        assert_eq!(validate(&wide), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = validate(&s);
        }

        #[test]
        fn never_panics_on_selector_alphabet(s in "[a-z()!&|=' {},.\\-/]{0,300}") {
            let _ = validate(&s);
        }
    }
}
