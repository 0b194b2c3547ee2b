//! The CLIP byte-level BPE tokenizer, assembled from the `tokenizers` crate's parts:
//!
//! - normaliser: NFC (what ftfy's `fix_text` does to well-formed text), whitespace runs → one
//!   space, lowercase;
//! - pre-tokeniser: CLIP's word regex (`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`),
//!   then byte-level mapping;
//! - model: BPE over `bpe_simple_vocab_16e6.txt.gz` with the `</w>` end-of-word suffix.
//!
//! Before the pipeline, HTML entities are unescaped twice, as CLIP's `basic_clean` does. The
//! ftfy mojibake repair is not reproduced (it changes only text that was mis-decoded upstream).
//!
//! A sequence is `[<|startoftext|>] + BPE + [<|endoftext|>]`; over-long text is cut to the
//! context, keeping the end token last, and [`Encoding::truncated`] says so.

use std::io::Read;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer,
};

use crate::{Error, Result};

static BPE_VOCAB_GZ: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");
const WORD_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Number of merges CLIP reads from the vocabulary file (`49152 - 256 - 2`).
const NUM_MERGES: usize = 48894;

/// `<|startoftext|>`.
pub const SOT: u32 = 49406;
/// `<|endoftext|>`; also the largest id, which is how the text tower finds it.
pub const EOT: u32 = 49407;

/// Token ids of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[SOT, …, EOT]`, unpadded, at most the context length.
    pub ids: Vec<u32>,
    /// Whether the text was cut to fit the context.
    pub truncated: bool,
}

impl Encoding {
    /// The ids zero-padded to `len` (what the official code feeds the text tower).
    pub fn padded(&self, len: usize) -> Vec<u32> {
        let mut v = self.ids.clone();
        v.resize(len.max(v.len()), 0);
        v
    }
}

/// The CLIP tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    context: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("context", &self.context)
            .finish()
    }
}

/// GPT-2/CLIP's reversible byte → printable-character table, in CLIP's vocabulary order.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid code point")))
        .collect()
}

/// Unescape HTML character references (named basics and numeric), as `html.unescape` does for
/// the ones captions contain.
fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ if name.starts_with("#x") || name.starts_with("#X") => {
                    u32::from_str_radix(&name[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                }
                _ if name.starts_with('#') => name[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            ch.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Tokenizer {
    /// The CLIP tokenizer with the vocabulary compiled into this crate and a context of
    /// `context` tokens (77 for evaluation, 32 for SegCLIP training).
    pub fn new(context: usize) -> Result<Self> {
        if context < 2 {
            return Err(Error::Tokenizer(format!(
                "a context of {context} tokens cannot hold the start and end tokens"
            )));
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(BPE_VOCAB_GZ)
            .read_to_string(&mut text)
            .map_err(|e| Error::Tokenizer(format!("corrupt BPE vocabulary: {e}")))?;
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(NUM_MERGES)
            .map(|l| {
                let mut it = l.split(' ');
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(Error::Tokenizer(format!("bad merge line `{l}`"))),
                }
            })
            .collect::<Result<_>>()?;
        if merges.len() != NUM_MERGES {
            return Err(Error::Tokenizer(format!(
                "expected {NUM_MERGES} merges, found {}",
                merges.len()
            )));
        }
        let byte_chars: Vec<String> = bytes_to_unicode()
            .into_iter()
            .map(|(_, c)| c.to_string())
            .collect();
        let mut vocab: Vec<String> = byte_chars.clone();
        vocab.extend(byte_chars.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let vocab: ahash::AHashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix("</w>".into())
            .unk_token("<|endoftext|>".into())
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut inner = HfTokenizer::new(bpe);
        let terr = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
        inner
            .with_normalizer(Some(NormalizerWrapper::Sequence(NormSeq::new(vec![
                NFC.into(),
                Replace::new(
                    tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                    " ",
                )
                .map_err(terr)?
                .into(),
                Lowercase.into(),
            ]))))
            .map_err(terr)?;
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSeq::new(vec![
            Split::new(
                SplitPattern::Regex(WORD_REGEX.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(terr)?
            .into(),
            ByteLevel::new(false, true, false).into(),
        ]))));
        Ok(Self { inner, context })
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// BPE ids of `text` without start and end tokens.
    pub fn bpe(&self, text: &str) -> Result<Vec<u32>> {
        let text = html_unescape(&html_unescape(text));
        let enc = self
            .inner
            .encode(text.trim(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[SOT] + BPE(text) + [EOT]`, cut to the context with the end token kept last.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let mut ids = Vec::with_capacity(self.context);
        ids.push(SOT);
        ids.extend(self.bpe(text)?);
        let truncated = ids.len() + 1 > self.context;
        ids.truncate(self.context - 1);
        ids.push(EOT);
        Ok(Encoding { ids, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_reference_tokenizer() {
        let tok = Tokenizer::new(77).unwrap();
        let golden = include_str!("../assets/tokenizer-golden.txt");
        let mut n = 0;
        for line in golden
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (text, ids) = line.split_once('\t').unwrap();
            let want: Vec<u32> = ids.split(' ').map(|v| v.parse().unwrap()).collect();
            let got = tok.encode(text).unwrap();
            assert_eq!(got.ids, want, "text {text:?}");
            assert!(!got.truncated);
            n += 1;
        }
        assert_eq!(n, 12);
    }

    #[test]
    fn truncation_keeps_the_end_token() {
        let tok = Tokenizer::new(8).unwrap();
        let e = tok
            .encode("one two three four five six seven eight nine")
            .unwrap();
        assert_eq!(e.ids.len(), 8);
        assert_eq!(*e.ids.last().unwrap(), EOT);
        assert_eq!(e.ids[0], SOT);
        assert!(e.truncated);
        assert_eq!(e.padded(10)[8..], [0, 0]);
    }

    #[test]
    fn html_entities_are_unescaped_twice() {
        assert_eq!(
            html_unescape("a &amp;amp; b &#39;c&#x27; &bogus; &"),
            "a &amp; b 'c' &bogus; &"
        );
        let tok = Tokenizer::new(77).unwrap();
        assert_eq!(
            tok.encode("cats &amp;amp; dogs").unwrap(),
            tok.encode("cats & dogs").unwrap()
        );
    }

    #[test]
    fn vocabulary_has_clip_size() {
        let tok = Tokenizer::new(77).unwrap();
        assert_eq!(tok.inner.get_vocab_size(false), 49408);
    }
}
