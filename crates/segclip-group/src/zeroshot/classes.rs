//! Class lists and the text classifier built from them (spec section 4.2).
//!
//! A class is one or more synonyms; its embedding is the mean of the (un-normalised) text
//! embeddings of every synonym in every template, then L2-normalised, as the official
//! `build_seg_inference` does for templates.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use segclip_vit::{TextTransformer, Tokenizer};

use super::templates::Templates;
use crate::{Error, Result};

/// One class: a display name (its first synonym) and its synonyms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub synonyms: Vec<String>,
}

impl Class {
    pub fn name(&self) -> &str {
        &self.synonyms[0]
    }
}

/// A validated list of foreground classes: non-empty, no empty names, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassList {
    pub classes: Vec<Class>,
}

impl ClassList {
    /// Build from classes given as synonym lists. A leading `background` class is dropped (it
    /// is handled by the threshold, as in the official evaluation).
    pub fn new(classes: Vec<Vec<String>>) -> Result<Self> {
        let mut out: Vec<Class> = Vec::new();
        for (i, syn) in classes.into_iter().enumerate() {
            let syn: Vec<String> = syn
                .into_iter()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            if syn.is_empty() || syn.iter().any(String::is_empty) {
                return Err(Error::Classes(format!("class {} has an empty name", i + 1)));
            }
            if i == 0 && syn.len() == 1 && syn[0].eq_ignore_ascii_case("background") {
                continue;
            }
            out.push(Class { synonyms: syn });
        }
        if out.is_empty() {
            return Err(Error::Classes(
                "no classes given: name at least one class, e.g. --classes \"cat,dog\"".into(),
            ));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, c) in out.iter().enumerate() {
            for s in &c.synonyms {
                if let Some(j) = seen.insert(s.to_lowercase(), i) {
                    return Err(Error::Classes(if i == j {
                        format!("class `{}` lists the synonym `{s}` twice", c.name())
                    } else {
                        format!("`{s}` appears in two classes (`{}` and `{}`): class names must be unique", out[j].name(), c.name())
                    }));
                }
            }
        }
        Ok(Self { classes: out })
    }

    /// From a command-line list: classes separated by `,`, synonyms of one class by `|`
    /// (`"cat,dog,sofa|couch"`).
    pub fn parse_arg(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Self::new(vec![]);
        }
        Self::new(
            s.split(',')
                .map(|c| c.split('|').map(|x| x.trim().to_string()).collect())
                .collect(),
        )
    }

    /// From a file's text: one class a line, synonyms separated by `,`; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Result<Self> {
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.split(',').map(|x| x.trim().to_string()).collect())
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name().to_string()).collect()
    }
}

/// Text embeddings of class prompts, cached per prompt so that repeated class lists (every image
/// of an evaluation, every call of a server) cost one text forward.
#[derive(Debug)]
pub struct TextClassifier {
    tokenizer: Tokenizer,
    cache: HashMap<String, Tensor>,
}

impl TextClassifier {
    pub fn new(context: usize) -> Result<Self> {
        Ok(Self {
            tokenizer: Tokenizer::new(context)?,
            cache: HashMap::new(),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Un-normalised embeddings (P, D) of `prompts`, from the cache where possible.
    pub fn embed_prompts(&mut self, text: &TextTransformer, prompts: &[String]) -> Result<Tensor> {
        let todo: Vec<&String> = {
            let mut v: Vec<&String> = prompts
                .iter()
                .filter(|p| !self.cache.contains_key(*p))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        const CHUNK: usize = 64;
        for chunk in todo.chunks(CHUNK) {
            let ids = chunk
                .iter()
                .map(|p| {
                    let e = self.tokenizer.encode(p)?;
                    if e.truncated {
                        return Err(Error::Classes(format!(
                            "the prompt `{p}` is longer than the text context of {} tokens; use a shorter class name",
                            self.tokenizer.context()
                        )));
                    }
                    Ok(e.ids)
                })
                .collect::<Result<Vec<_>>>()?;
            let emb = text.encode(&ids)?;
            for (i, p) in chunk.iter().enumerate() {
                self.cache.insert((*p).clone(), emb.get(i)?);
            }
        }
        let rows = prompts
            .iter()
            .map(|p| self.cache[p].clone())
            .collect::<Vec<_>>();
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// L2-normalised class embeddings T (K, D): per class, the mean over synonyms × templates.
    pub fn classify(
        &mut self,
        text: &TextTransformer,
        classes: &ClassList,
        templates: Templates,
    ) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(classes.len());
        for c in &classes.classes {
            let prompts: Vec<String> = c
                .synonyms
                .iter()
                .flat_map(|s| templates.list().iter().map(move |t| Templates::fill(t, s)))
                .collect();
            let e = self
                .embed_prompts(text, &prompts)?
                .to_dtype(DType::F32)?
                .mean(0)?;
            rows.push(e);
        }
        let t = Tensor::stack(&rows, 0)?;
        Ok(l2_normalize_rows(&t)?)
    }
}

/// `x / max(‖x‖, 1e-12)` along the last dimension, as `F.normalize`.
pub fn l2_normalize_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(candle_core::D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::INFINITY)?;
    x.broadcast_div(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments_and_files() {
        let c = ClassList::parse_arg(" cat , dog,sofa|couch ").unwrap();
        assert_eq!(c.names(), ["cat", "dog", "sofa"]);
        assert_eq!(c.classes[2].synonyms, ["sofa", "couch"]);
        let f =
            ClassList::parse_file("# VOC\nbackground\naeroplane, airplane\n\n  potted   plant\n")
                .unwrap();
        assert_eq!(f.names(), ["aeroplane", "potted plant"]);
        assert_eq!(f.classes[0].synonyms, ["aeroplane", "airplane"]);
    }

    #[test]
    fn rejects_empty_and_duplicate_lists() {
        for bad in [
            "",
            "   ",
            "background",
            "cat,,dog",
            "cat,dog,Cat",
            "sofa|couch,couch",
            "cat|cat",
        ] {
            let err = ClassList::parse_arg(bad).unwrap_err().to_string();
            assert!(err.starts_with("class list:"), "{bad:?}: {err}");
        }
        let err = ClassList::parse_arg("cat,dog,cat").unwrap_err().to_string();
        assert!(err.contains("`cat`") && err.contains("unique"), "{err}");
        assert!(ClassList::parse_file("\n# nothing\n")
            .unwrap_err()
            .to_string()
            .contains("no classes"));
    }
}
