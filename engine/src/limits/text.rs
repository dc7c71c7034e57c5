//! Measuring Cedar policy and schema text without parsing it.
//!
//! A tokenizer that knows only what the limits need (brackets, operators,
//! string literals and comments), and one pass that estimates how deep
//! Cedar's syntax tree of each policy will be. The estimate follows Cedar's
//! operator precedence, so a long conjunction of short conditions counts as
//! long as the conjunction, not as the sum of every operator in it; it
//! never falls below the real depth, since every bracket counts a level
//! even where Cedar's tree has none (parentheses).

use super::{Limit, LimitExceeded, MAX_EXPRESSION_DEPTH, MAX_POLICIES, MAX_POLICY_TEXT_BYTES};
use super::{MAX_SCHEMA_NESTING, MAX_SCHEMA_TEXT_BYTES};

/// Refuses Cedar policy text over any policy limit.
pub fn check_policy_text(text: &str) -> Result<(), LimitExceeded> {
    if text.len() > MAX_POLICY_TEXT_BYTES {
        return Err(LimitExceeded::new(Limit::PolicyTextBytes, text.len(), "policy text", None));
    }
    PolicyScan::default().run(text)
}

/// Refuses Cedar schema text (`.cedarschema`) over the schema limits:
/// braces, brackets and `Set<…>` all count as nesting.
pub fn check_schema_text(text: &str) -> Result<(), LimitExceeded> {
    if text.len() > MAX_SCHEMA_TEXT_BYTES {
        return Err(LimitExceeded::new(Limit::SchemaTextBytes, text.len(), "schema", None));
    }
    let mut depth = 0usize;
    for token in Tokens::new(text) {
        match token.kind {
            TokenKind::Open | TokenKind::Punct(b'<') => {
                depth += 1;
                if depth > MAX_SCHEMA_NESTING {
                    // No offset: offsets point into the policy text.
                    let place = format!("schema (line {})", token.line);
                    return Err(LimitExceeded::new(Limit::SchemaNesting, depth, place, None));
                }
            }
            TokenKind::Close | TokenKind::Punct(b'>') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Precedence levels of Cedar's binary and unary operators, loosest first;
/// `if … then … else …` sits below them all and is counted apart.
const OR: usize = 0;
const AND: usize = 1;
const RELATION: usize = 2;
const SUM: usize = 3;
const PRODUCT: usize = 4;
const UNARY: usize = 5;
const MEMBER: usize = 6;
const LEVELS: usize = 7;

/// One bracket's contents (or a whole policy's, outside any bracket), as
/// far as they have been read: per precedence level, how many operators
/// the operand being read has at that level and the deepest operand
/// finished at that level.
#[derive(Default, Clone, Copy)]
struct Frame {
    operators: [usize; LEVELS],
    deepest: [usize; LEVELS],
    /// The depth of the primary being read: 0, or a bracket's.
    primary: usize,
    /// The deepest element finished, where `,`, `:`, `then` and `else` separate elements.
    deepest_element: usize,
    /// `if`s seen: each nests what follows it one level deeper.
    conditionals: usize,
}

impl Frame {
    /// The depth of the operand being read at `level`, folding every tighter level into it.
    fn operand_depth(&self, level: usize) -> usize {
        (level..LEVELS).rev().fold(self.primary, |inner, l| {
            let (operators, deepest) =
                (self.operators.get(l).copied().unwrap_or(0), self.deepest.get(l).copied().unwrap_or(0));
            operators + deepest.max(inner)
        })
    }

    /// Ends the operand being read at every level tighter than `level`.
    fn finish_tighter_than(&mut self, level: usize) -> usize {
        let depth = self.operand_depth(level + 1);
        for l in level + 1..LEVELS {
            if let (Some(operators), Some(deepest)) = (self.operators.get_mut(l), self.deepest.get_mut(l)) {
                (*operators, *deepest) = (0, 0);
            }
        }
        self.primary = 0;
        depth
    }

    fn operator(&mut self, level: usize) {
        let operand = self.finish_tighter_than(level);
        if let (Some(operators), Some(deepest)) = (self.operators.get_mut(level), self.deepest.get_mut(level))
        {
            *deepest = (*deepest).max(operand);
            *operators += 1;
        }
    }

    fn separator(&mut self) {
        let element = self.operand_depth(OR);
        *self = Self { deepest_element: self.deepest_element.max(element), ..Self::default() }
            .with_conditionals(self.conditionals);
    }

    fn with_conditionals(self, conditionals: usize) -> Self {
        Self { conditionals, ..self }
    }

    /// The depth of everything in the frame if it ended now.
    fn depth(&self) -> usize {
        self.conditionals + self.deepest_element.max(self.operand_depth(OR))
    }
}

/// One pass over policy text: policies end at a `;` outside any bracket.
#[derive(Default)]
struct PolicyScan {
    /// Open brackets of the current policy, innermost last.
    frames: Vec<Frame>,
    /// The policy outside any bracket.
    base: Frame,
    policies: usize,
    /// Where the current policy began, and its line, once it has a token.
    start: Option<(usize, usize)>,
    /// Whether the last token ended an operand, so that `-` is binary.
    after_operand: bool,
}

impl PolicyScan {
    fn run(mut self, text: &str) -> Result<(), LimitExceeded> {
        for token in Tokens::new(text) {
            let (start, line) = *self.start.get_or_insert((token.start, token.line));
            let after_operand = std::mem::replace(&mut self.after_operand, false);
            match token.kind {
                TokenKind::Open => self.frames.push(Frame::default()),
                TokenKind::Close => {
                    self.after_operand = true;
                    // An unbalanced close is Cedar's to report.
                    if let Some(closed) = self.frames.pop() {
                        let outer = self.frames.last_mut().unwrap_or(&mut self.base);
                        outer.primary = outer.primary.max(closed.depth() + 1);
                    }
                    continue;
                }
                TokenKind::Punct(b';') if self.frames.is_empty() => {
                    self.end_policy(start, line)?;
                    continue;
                }
                TokenKind::Punct(b',' | b':') => {
                    self.frame().separator();
                    continue;
                }
                TokenKind::Word(word) => match word {
                    b"if" => self.frame().conditionals += 1,
                    b"then" | b"else" => {
                        self.frame().separator();
                        continue;
                    }
                    b"in" | b"has" | b"like" | b"is" => self.frame().operator(RELATION),
                    _ => {
                        self.after_operand = true;
                        continue;
                    }
                },
                TokenKind::Pair(b"||") => self.frame().operator(OR),
                TokenKind::Pair(b"&&") => self.frame().operator(AND),
                TokenKind::Pair(_) | TokenKind::Punct(b'<' | b'>') => self.frame().operator(RELATION),
                TokenKind::Punct(b'+') => self.frame().operator(SUM),
                TokenKind::Punct(b'-') if after_operand => self.frame().operator(SUM),
                TokenKind::Punct(b'*') => self.frame().operator(PRODUCT),
                TokenKind::Punct(b'!' | b'-') => self.frame().operator(UNARY),
                TokenKind::Punct(b'.') => self.frame().operator(MEMBER),
                TokenKind::Punct(_) | TokenKind::Literal | TokenKind::Path => {
                    self.after_operand = token.kind == TokenKind::Literal;
                    continue;
                }
            }
            let depth = self.depth_so_far();
            if depth > MAX_EXPRESSION_DEPTH {
                let place = format!("policy {} (line {line})", self.policies + 1);
                return Err(LimitExceeded::new(Limit::ExpressionDepth, depth, place, Some(token.start)));
            }
        }
        match self.start {
            Some((start, line)) => self.end_policy(start, line),
            None => Ok(()),
        }
    }

    /// The innermost open bracket, or the policy outside any.
    fn frame(&mut self) -> &mut Frame {
        self.frames.last_mut().unwrap_or(&mut self.base)
    }

    /// The estimated depth of the current policy if every open bracket
    /// closed now; it only grows as the policy is read.
    fn depth_so_far(&self) -> usize {
        let inner = self.frames.iter().rev().fold(None, |inner: Option<usize>, frame| {
            let primary = inner.map_or(frame.primary, |depth| frame.primary.max(depth + 1));
            Some(Frame { primary, ..*frame }.depth())
        });
        let primary = inner.map_or(self.base.primary, |depth| self.base.primary.max(depth + 1));
        Frame { primary, ..self.base }.depth()
    }

    fn end_policy(&mut self, start: usize, line: usize) -> Result<(), LimitExceeded> {
        self.policies += 1;
        if self.policies > MAX_POLICIES {
            let place = format!("policy {} (line {line})", self.policies);
            return Err(LimitExceeded::new(Limit::Policies, self.policies, place, Some(start)));
        }
        self.base = Frame::default();
        self.start = None;
        Ok(())
    }
}

/// A token of Cedar policy or schema text, as far as the scans need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind<'a> {
    /// `(`, `[` or `{`.
    Open,
    /// `)`, `]` or `}`.
    Close,
    /// `||`, `&&`, `==`, `!=`, `<=` or `>=`.
    Pair(&'a [u8]),
    /// `::`, inside a name.
    Path,
    /// An identifier or a number.
    Word(&'a [u8]),
    /// A string literal.
    Literal,
    /// Any other single byte outside strings and comments.
    Punct(u8),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// Byte offset.
    start: usize,
    /// 1-based line.
    line: usize,
}

/// The tokens of Cedar text, skipping whitespace, `//` comments and the
/// contents of string literals (with their `\` escapes).
struct Tokens<'a> {
    bytes: &'a [u8],
    position: usize,
    line: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { bytes: text.as_bytes(), position: 0, line: 1 }
    }

    fn at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.position + offset).copied()
    }

    /// Advances past bytes while `keep` holds, counting lines.
    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        while let Some(byte) = self.at(0).filter(|b| keep(*b)) {
            if byte == b'\n' {
                self.line += 1;
            }
            self.position += 1;
        }
    }

    /// Advances past a string literal whose opening quote is at the position.
    fn skip_string(&mut self) {
        self.position += 1;
        while let Some(byte) = self.at(0) {
            self.position += 1;
            match byte {
                b'"' => return,
                b'\\' => self.position += 1,
                b'\n' => self.line += 1,
                _ => {}
            }
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            self.skip_while(|b| b.is_ascii_whitespace());
            if self.at(0) == Some(b'/') && self.at(1) == Some(b'/') {
                self.skip_while(|b| b != b'\n');
                continue;
            }
            break;
        }
        let (start, line) = (self.position, self.line);
        let byte = self.at(0)?;
        let kind = match (byte, self.at(1)) {
            (b'(' | b'[' | b'{', _) => TokenKind::Open,
            (b')' | b']' | b'}', _) => TokenKind::Close,
            (b'"', _) => {
                self.skip_string();
                return Some(Token { kind: TokenKind::Literal, start, line });
            }
            (b, _) if b.is_ascii_alphanumeric() || b == b'_' => {
                self.skip_while(|b| b.is_ascii_alphanumeric() || b == b'_');
                let word = self.bytes.get(start..self.position).unwrap_or_default();
                return Some(Token { kind: TokenKind::Word(word), start, line });
            }
            (b':', Some(b':')) => {
                self.position += 2;
                return Some(Token { kind: TokenKind::Path, start, line });
            }
            (b'|', Some(b'|')) | (b'&', Some(b'&')) | (b'=' | b'!' | b'<' | b'>', Some(b'=')) => {
                self.position += 2;
                let pair = self.bytes.get(start..self.position).unwrap_or_default();
                return Some(Token { kind: TokenKind::Pair(pair), start, line });
            }
            _ => TokenKind::Punct(byte),
        };
        self.position += 1;
        Some(Token { kind, start, line })
    }
}
