//! Reading and writing float tensors in safetensors files, memory-mapped, with atomic writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::AdapterError;

/// A dense row-major float32 matrix on the host: the exchange type between files, burn
/// tensors and nalgebra.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

impl HostMatrix {
    /// A matrix from row-major data. Panics if `data.len() != rows * cols` (a programming
    /// error, not user input).
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "HostMatrix data length");
        HostMatrix { rows, cols, data }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The transpose.
    pub fn transpose(&self) -> HostMatrix {
        let mut data = vec![0.0; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        HostMatrix::new(self.cols, self.rows, data)
    }

    /// As an nalgebra matrix in float64.
    pub fn to_dmatrix(&self) -> nalgebra::DMatrix<f64> {
        nalgebra::DMatrix::from_row_iterator(
            self.rows,
            self.cols,
            self.data.iter().map(|&v| v as f64),
        )
    }

    /// From an nalgebra matrix (rounded to float32).
    pub fn from_dmatrix(m: &nalgebra::DMatrix<f64>) -> Self {
        let mut data = Vec::with_capacity(m.len());
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                data.push(m[(i, j)] as f32);
            }
        }
        HostMatrix::new(m.nrows(), m.ncols(), data)
    }

    /// `true` when every value is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// A float tensor of any rank read from a safetensors file, converted to float32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major, as float32.
    pub data: Vec<f32>,
    /// The dtype stored in the file.
    pub dtype: Dtype,
}

impl HostTensor {
    /// The tensor as a matrix, or a shape error naming `key` when it is not 2-D.
    pub fn into_matrix(self, key: &str) -> Result<HostMatrix, AdapterError> {
        match self.shape.as_slice() {
            &[rows, cols] => Ok(HostMatrix::new(rows, cols, self.data)),
            _ => Err(AdapterError::ShapeMismatch {
                key: key.to_string(),
                expected: vec![0, 0],
                found: self.shape,
            }),
        }
    }
}

/// A memory-mapped safetensors file: tensors are converted one at a time, on request, so a
/// large checkpoint never sits in memory whole.
pub struct TensorFile {
    path: PathBuf,
    mmap: Mmap,
    names: Vec<String>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl TensorFile {
    /// Open and validate the header of a safetensors file.
    pub fn open(path: &Path) -> Result<Self, AdapterError> {
        let file = File::open(path).map_err(|e| AdapterError::io(path, e))?;
        // SAFETY: the map is read-only; the file may be modified by another process while
        // mapped, which safetensors' readers (including PyTorch's) also accept.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| AdapterError::io(path, e))?;
        let parsed =
            SafeTensors::deserialize(&mmap).map_err(|e| AdapterError::InvalidSafetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut names: Vec<String> = parsed.names().into_iter().map(str::to_string).collect();
        names.sort();
        Ok(TensorFile {
            path: path.to_path_buf(),
            mmap,
            names,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated in open")
    }

    /// Shape and dtype of a tensor without reading its data.
    pub fn info(&self, key: &str) -> Result<(Vec<usize>, Dtype), AdapterError> {
        let parsed = self.parsed();
        let view = parsed
            .tensor(key)
            .map_err(|_| AdapterError::MissingTensor {
                key: key.to_string(),
            })?;
        Ok((view.shape().to_vec(), view.dtype()))
    }

    /// Read one tensor, converted to float32 (F32, F64, F16 and BF16 are accepted).
    pub fn tensor(&self, key: &str) -> Result<HostTensor, AdapterError> {
        let parsed = self.parsed();
        let view = parsed
            .tensor(key)
            .map_err(|_| AdapterError::MissingTensor {
                key: key.to_string(),
            })?;
        let data = view_to_f32(&view, key)?;
        Ok(HostTensor {
            shape: view.shape().to_vec(),
            data,
            dtype: view.dtype(),
        })
    }

    /// Read a 2-D tensor; a tensor of another rank is a shape error naming the key.
    pub fn matrix(&self, key: &str) -> Result<HostMatrix, AdapterError> {
        self.tensor(key)?.into_matrix(key)
    }
}

fn view_to_f32(view: &TensorView<'_>, key: &str) -> Result<Vec<f32>, AdapterError> {
    let bytes = view.data();
    let out = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(AdapterError::UnsupportedDtype {
                key: key.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(out)
}

/// Encode float32 values in `dtype` (F32, F64, F16 or BF16), little-endian.
pub fn encode_f32(values: &[f32], dtype: Dtype, key: &str) -> Result<Vec<u8>, AdapterError> {
    let mut out = Vec::with_capacity(values.len() * dtype.bitsize() / 8);
    match dtype {
        Dtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as f64).to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        other => {
            return Err(AdapterError::UnsupportedDtype {
                key: key.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    }
    Ok(out)
}

/// One tensor to write: raw little-endian bytes with dtype and shape.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size()` bytes.
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// A float32 tensor.
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        RawTensor {
            dtype: Dtype::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write `tensors` to `path` as safetensors, atomically: the data goes to a temporary file in
/// the same folder, which is flushed and then renamed over `path`. If anything fails, `path`
/// keeps its previous content.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), AdapterError> {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), metadata)
        .map_err(|e| AdapterError::InvalidSafetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AdapterError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rora-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| AdapterError::io(&dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| AdapterError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| AdapterError::io(path, e.error))?;
    Ok(())
}
