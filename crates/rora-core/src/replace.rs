//! Writing new values into named parameters of any module, keeping their identity
//! (so optimizer state stays attached): the way to load weights by path.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

use crate::convert::replace_param;

/// Replace the values of the parameters at the given paths (parameter paths as the module
/// visitor names them, e.g. `layers.0.query.lora.a`). Values are given as 2-D tensors and
/// reshaped to the parameter's rank (a scalar parameter `[1]` takes a `[1, 1]` value).
/// Returns the module and the paths that were found.
pub fn replace_params<M: Module>(model: M, values: HashMap<String, Tensor<2>>) -> (M, Vec<String>) {
    let mut mapper = Replacer {
        path: Vec::new(),
        values,
        replaced: Vec::new(),
    };
    let model = model.map(&mut mapper);
    (model, mapper.replaced)
}

struct Replacer {
    path: Vec<String>,
    values: HashMap<String, Tensor<2>>,
    replaced: Vec<String>,
}

impl ModuleMapper for Replacer {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        match self.values.remove(&path) {
            Some(value) => {
                let dims: [usize; D] = param.shape().dims();
                let value: Tensor<D> = value.reshape(dims);
                self.replaced.push(path);
                replace_param(param, value)
            }
            None => param,
        }
    }
}
