//! Named parameters (diffusers' state-dict names) and their gradients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::ops::elementwise;
use crate::tensor::Tensor;

/// Index of a parameter in a [`Params`] store.
pub type ParamId = usize;

/// An ordered set of named tensors, named exactly as in diffusers' state dict
/// (e.g. `down_blocks.0.resnets.1.conv2.weight`).
#[derive(Default)]
pub struct Params {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    tensors: Vec<Option<Tensor>>,
    index: HashMap<String, ParamId>,
    frozen: Frozen,
}

/// Forms of the weights derived once while they are frozen ([`Params::freeze`]).
#[derive(Default)]
struct Frozen {
    holders: AtomicUsize,
    derived: Mutex<HashMap<ParamId, Tensor>>,
}

/// Keeps a [`Params`] frozen; the derived forms are dropped with the last guard.
pub(crate) struct FrozenGuard<'a> {
    frozen: &'a Frozen,
}

impl Drop for FrozenGuard<'_> {
    fn drop(&mut self) {
        if self.frozen.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.frozen.derived.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

impl Params {
    /// Promise that the weights keep their values while the guard lives (a sampling loop holds
    /// one): meanwhile [`Params::derived`] computes forms of them once (the Winograd weight
    /// transforms) instead of at every forward. Nothing is cached outside such a scope, so
    /// weights that change between calls (training) are always read afresh.
    pub(crate) fn freeze(&self) -> FrozenGuard<'_> {
        self.frozen.holders.fetch_add(1, Ordering::AcqRel);
        FrozenGuard { frozen: &self.frozen }
    }

    /// Whether a [`FrozenGuard`] is alive (the weights promise to hold still; no `set` can run
    /// meanwhile, as a guard borrows the store).
    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen.holders.load(Ordering::Acquire) > 0
    }

    /// While frozen: the form of parameter `id` that `make` computes, made on first use and
    /// then reused. Not frozen: None (the caller computes it as usual).
    pub(crate) fn derived(&self, id: ParamId, make: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
        if !self.is_frozen() {
            return Ok(None);
        }
        let mut map = self.frozen.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(&id) {
            return Ok(Some(t.clone()));
        }
        let t = make()?;
        map.insert(id, t.clone());
        Ok(Some(t))
    }

    /// Declare a parameter (no storage yet).
    pub(crate) fn declare(&mut self, name: String, shape: Vec<usize>) -> ParamId {
        let id = self.names.len();
        self.index.insert(name.clone(), id);
        self.names.push(name);
        self.shapes.push(shape);
        self.tensors.push(None);
        id
    }

    /// Number of parameters tensors.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no parameter is declared.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.shapes.iter().map(|s| s.iter().product::<usize>()).sum()
    }

    /// Parameter names in declaration order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Expected shape of parameter `id`.
    pub fn shape(&self, id: ParamId) -> &[usize] {
        &self.shapes[id]
    }

    /// Id of the parameter called `name`.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.index.get(name).copied()
    }

    /// The tensor of parameter `id`.
    ///
    /// # Panics
    /// If the parameter has not been set (every loader sets all of them).
    pub fn get(&self, id: ParamId) -> &Tensor {
        self.tensors[id]
            .as_ref()
            .unwrap_or_else(|| panic!("parameter {} not loaded", self.names[id]))
    }

    /// Set parameter `id` from a tensor of the declared shape.
    pub fn set(&mut self, id: ParamId, t: Tensor) -> Result<()> {
        if t.shape() != self.shapes[id].as_slice() {
            return Err(Error::shape(
                "Params::set",
                format!(
                    "{}: expected shape {:?}, got {:?}",
                    self.names[id],
                    self.shapes[id],
                    t.shape()
                ),
            ));
        }
        self.tensors[id] = Some(t);
        Ok(())
    }

    /// Every parameter tensor (all must be set).
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// A store with the same names and shapes, every tensor a zero-filled copy.
    pub fn zeros_like(&self, ctx: &Context) -> Result<Params> {
        let mut p = Params {
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            ..Default::default()
        };
        p.index = self.index.clone();
        for (name, s) in self.names.iter().zip(&self.shapes) {
            p.tensors.push(Some(ctx.zeros(s, name)?));
        }
        Ok(p)
    }

    /// A store with the same names and shapes holding copies of every tensor.
    pub fn duplicate(&self, ctx: &Context) -> Result<Params> {
        let mut p = Params {
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            ..Default::default()
        };
        p.index = self.index.clone();
        for (i, name) in self.names.iter().enumerate() {
            p.tensors.push(Some(ctx.duplicate(self.get(i), name)?));
        }
        Ok(p)
    }
}

/// Gradients of a model's parameters, accumulated (`+=`) by the backward pass.
pub struct Grads {
    slots: Vec<Option<Tensor>>,
}

impl Grads {
    /// Empty gradients for `n` parameters.
    pub fn new(n: usize) -> Self {
        Grads {
            slots: (0..n).map(|_| None).collect(),
        }
    }

    /// grad\[id\] += g (takes `g` as the gradient if none was recorded yet).
    pub fn accumulate(&mut self, ctx: &Context, id: ParamId, g: Tensor) -> Result<()> {
        match &self.slots[id] {
            None => self.slots[id] = Some(g),
            Some(acc) => elementwise::add_inplace(ctx, acc, &g)?,
        }
        Ok(())
    }

    /// Gradient of parameter `id`, if any was recorded.
    pub fn get(&self, id: ParamId) -> Option<&Tensor> {
        self.slots[id].as_ref()
    }

    /// Forget every gradient.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
