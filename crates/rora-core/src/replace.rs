//! Writing new values into named parameters of any module, keeping their identity
//! (so optimizer state stays attached): the way to load weights by path.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::convert::replace_param;

/// Why [`replace_params`] wrote nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplaceError {
    /// No float parameter has this path.
    #[error("the model has no parameter {path:?}{hint}")]
    UnknownParam {
        /// The path asked for.
        path: String,
        /// Parameters with the same last component, if any.
        hint: String,
    },
    /// The value does not fit the parameter.
    #[error("parameter {path:?} has shape {expected:?}; the value has shape {found:?}")]
    ShapeMismatch {
        /// The parameter.
        path: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The value's shape.
        found: Vec<usize>,
    },
}

/// Replace the values of the parameters at the given paths (parameter paths as the module
/// visitor names them, e.g. `layers.0.query.lora.a`). Values are given as 2-D tensors and
/// reshaped to the parameter's shape, which must hold the same number of elements (a
/// scalar parameter `[1]` takes a `[1, 1]` value).
///
/// All or nothing: every path is checked before anything is written, and a path the model
/// does not have, or a value that does not fit, is an error.
pub fn replace_params<M: Module>(
    model: M,
    values: HashMap<String, Tensor<2>>,
) -> Result<M, ReplaceError> {
    if values.is_empty() {
        return Ok(model);
    }
    let mut shapes = Shapes::default();
    model.visit(&mut shapes);
    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort();
    for path in keys {
        let found = values[path].dims().to_vec();
        match shapes.shapes.get(path.as_str()) {
            None => {
                let last = path.rsplit('.').next().unwrap_or(path);
                let similar: Vec<&str> = shapes
                    .shapes
                    .keys()
                    .filter(|p| p.rsplit('.').next() == Some(last))
                    .map(String::as_str)
                    .take(5)
                    .collect();
                let hint = if similar.is_empty() {
                    String::new()
                } else {
                    format!(" (parameters named {last:?}: {})", similar.join(", "))
                };
                return Err(ReplaceError::UnknownParam {
                    path: path.clone(),
                    hint,
                });
            }
            Some(expected)
                if expected.iter().product::<usize>() != found.iter().product::<usize>() =>
            {
                return Err(ReplaceError::ShapeMismatch {
                    path: path.clone(),
                    expected: expected.clone(),
                    found,
                });
            }
            Some(_) => {}
        }
    }
    let mut mapper = Replacer {
        path: Vec::new(),
        values,
    };
    let model = model.map(&mut mapper);
    debug_assert!(mapper.values.is_empty(), "every path was checked to exist");
    Ok(model)
}

#[derive(Default)]
struct Shapes {
    path: Vec<String>,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.shapes
            .insert(self.path.join("."), param.shape().dims::<D>().to_vec());
    }
}

struct Replacer {
    path: Vec<String>,
    values: HashMap<String, Tensor<2>>,
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
                replace_param(param, value)
            }
            None => param,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    fn two() -> Two {
        let device = Device::default();
        Two {
            a: LinearConfig::new(3, 2).init(&device),
            b: LinearConfig::new(2, 2).init(&device),
        }
    }

    #[test]
    fn writes_by_path_and_keeps_the_param_id() {
        let m = two();
        let id = m.a.weight.id;
        let device = Device::default();
        let value = Tensor::<2>::ones([3, 2], &device);
        let m =
            replace_params(m, HashMap::from([("a.weight".to_string(), value.clone())])).unwrap();
        assert_eq!(m.a.weight.id, id);
        m.a.weight
            .val()
            .into_data()
            .assert_eq(&value.into_data(), true);
    }

    #[test]
    fn unknown_path_or_wrong_size_writes_nothing() {
        let device = Device::default();
        let values = HashMap::from([
            ("a.weight".to_string(), Tensor::<2>::ones([3, 2], &device)),
            ("c.weight".to_string(), Tensor::<2>::ones([3, 2], &device)),
        ]);
        assert!(matches!(
            replace_params(two(), values),
            Err(ReplaceError::UnknownParam { ref path, ref hint })
                if path == "c.weight" && hint.contains("a.weight")
        ));
        let values = HashMap::from([("b.bias".to_string(), Tensor::<2>::ones([1, 3], &device))]);
        assert!(matches!(
            replace_params(two(), values),
            Err(ReplaceError::ShapeMismatch { ref expected, .. }) if expected == &[2]
        ));
    }
}
