//! Gradients of the trainable parameters by name, summed over micro-batches (gradient
//! accumulation) and over workers before the optimiser step.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::Result;

#[derive(Debug, Clone, Default)]
pub struct Grads(BTreeMap<String, Tensor>);

impl Grads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `g` to the gradient of `name` (detached: the sum must not hold the backward graph).
    pub fn add(&mut self, name: &str, g: &Tensor) -> Result<()> {
        let g = g.detach();
        let sum = match self.0.remove(name) {
            Some(prev) => (prev + g)?,
            None => g,
        };
        self.0.insert(name.to_string(), sum);
        Ok(())
    }

    pub fn set(&mut self, name: &str, g: Tensor) {
        self.0.insert(name.to_string(), g);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.0.iter()
    }
}
