//! Reading float tensors from safetensors files, memory-mapped; the tensor types writers take.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::AdapterError;

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

    /// How many values are NaN or infinite.
    pub fn non_finite_count(&self) -> usize {
        self.data.iter().filter(|v| !v.is_finite()).count()
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
    /// The tensor as a matrix, or [`AdapterError::NotAMatrix`] naming `key` when it is not
    /// 2-D.
    pub fn into_matrix(self, key: &str) -> Result<HostMatrix, AdapterError> {
        self.into_matrix_in(key, Path::new(""))
    }

    fn into_matrix_in(self, key: &str, file: &Path) -> Result<HostMatrix, AdapterError> {
        match self.shape.as_slice() {
            &[rows, cols] => Ok(HostMatrix::new(rows, cols, self.data)),
            _ => Err(AdapterError::NotAMatrix {
                path: file.to_path_buf(),
                key: key.to_string(),
                shape: self.shape,
            }),
        }
    }

    /// How many values are NaN or infinite.
    pub fn non_finite_count(&self) -> usize {
        self.data.iter().filter(|v| !v.is_finite()).count()
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
    ///
    /// `path` must be a regular file (a symbolic link to one is fine). A malformed header
    /// is [`AdapterError::InvalidSafetensors`], whose message names the offending tensor
    /// entry when there is one (wrong dtype, a shape that does not match its byte range,
    /// overlapping or out-of-file offsets).
    pub fn open(path: &Path) -> Result<Self, AdapterError> {
        let meta = std::fs::metadata(path).map_err(|e| AdapterError::io(path, e))?;
        if !meta.is_file() {
            return Err(AdapterError::NotAFile {
                path: path.to_path_buf(),
                kind: file_kind(&meta.file_type()),
            });
        }
        let file = File::open(path).map_err(|e| AdapterError::io(path, e))?;
        // SAFETY: the map is read-only; the file may be modified by another process while
        // mapped, which safetensors' readers (including PyTorch's) also accept.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| AdapterError::io(path, e))?;
        let parsed =
            SafeTensors::deserialize(&mmap).map_err(|e| AdapterError::InvalidSafetensors {
                path: path.to_path_buf(),
                message: crate::header::explain(&mmap, &e),
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
        let view = self.view(&parsed, key)?;
        Ok((view.shape().to_vec(), view.dtype()))
    }

    /// The tensor `key` of `parsed`, or [`AdapterError::MissingTensor`] naming this file.
    fn view<'p>(
        &self,
        parsed: &'p SafeTensors<'p>,
        key: &str,
    ) -> Result<TensorView<'p>, AdapterError> {
        parsed.tensor(key).map_err(|_| AdapterError::MissingTensor {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// Read one tensor, converted to float32 (F32, F64, F16 and BF16 are accepted).
    pub fn tensor(&self, key: &str) -> Result<HostTensor, AdapterError> {
        let parsed = self.parsed();
        let view = self.view(&parsed, key)?;
        let data = view_to_f32(&view, key, &self.path)?;
        Ok(HostTensor {
            shape: view.shape().to_vec(),
            data,
            dtype: view.dtype(),
        })
    }

    /// Read a 2-D tensor; a tensor of another rank is [`AdapterError::NotAMatrix`] naming
    /// the key and the file. The shape is checked before any data is converted.
    pub fn matrix(&self, key: &str) -> Result<HostMatrix, AdapterError> {
        let (shape, _) = self.info(key)?;
        if shape.len() != 2 {
            return Err(AdapterError::NotAMatrix {
                path: self.path.clone(),
                key: key.to_string(),
                shape,
            });
        }
        self.tensor(key)?.into_matrix_in(key, &self.path)
    }
}

/// What a non-regular file is, for messages.
pub(crate) fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn view_to_f32(view: &TensorView<'_>, key: &str, file: &Path) -> Result<Vec<f32>, AdapterError> {
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
                path: file.to_path_buf(),
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
                path: PathBuf::new(),
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

/// How many of `values` are NaN or infinite.
pub(crate) fn count_non_finite(values: &[f32]) -> usize {
    values.iter().filter(|v| !v.is_finite()).count()
}

/// How many values of a little-endian tensor of `dtype` are NaN or infinite (`0` for
/// non-float dtypes and float8 formats, which are not checked).
pub fn non_finite_count(dtype: Dtype, bytes: &[u8]) -> usize {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            .count(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .filter(|c| !f64::from_le_bytes((*c).try_into().expect("8 bytes")).is_finite())
            .count(),
        // f16: exponent bits all ones (0x7c00) is Inf or NaN; bf16: 0x7f80.
        Dtype::F16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00)
            .count(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80)
            .count(),
        _ => 0,
    }
}
