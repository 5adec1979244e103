//! Writing files so that a failure never leaves a partial or non-finite file, and nothing
//! but a regular file (or nothing) is ever replaced unless asked.
//!
//! Every writer here
//!
//! * checks what stands at the destination first ([`Overwrite`]): by default only a
//!   regular file is replaced; a symbolic link, a device, a FIFO, a socket or a folder is
//!   refused ([`AdapterError::UnsafeOutput`]) and left as it is;
//! * writes the data to a temporary file (`.rora-*.tmp`) in the destination's folder,
//!   flushes it to disk, then renames it over the destination, so a crash or an error
//!   leaves the previous file intact;
//! * gives a new file the usual mode, `0666` minus the umask (`0644` under umask `022`);
//!   a replaced file keeps its mode.
//!
//! [`write_safetensors_atomic`] also refuses any float tensor holding NaN or infinity
//! ([`AdapterError::NonFiniteOutput`]): nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Permissions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::AdapterError;
use crate::tensor_file::{RawTensor, file_kind, non_finite_count};

/// What a writer may replace at its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Overwrite {
    /// Create the file, or atomically replace a regular file; refuse anything else (a
    /// symbolic link, a device, a FIFO, a socket, a folder) and leave it untouched.
    #[default]
    RegularFile,
    /// As asked with `--force`: a symbolic link is followed and the regular file it points
    /// to is replaced atomically (the link itself is kept; a dangling link is still an
    /// error); a device, FIFO or socket is opened and written to directly (not atomic: no
    /// temporary file, no rename). A folder is still refused.
    Force,
}

/// Where the bytes go, once the destination is known to be acceptable.
#[derive(Debug)]
enum Destination {
    /// Temporary file + rename onto this path; `permissions` of the file being replaced.
    Replace {
        path: PathBuf,
        permissions: Option<Permissions>,
    },
    /// Open and write in place (a device or FIFO under [`Overwrite::Force`]).
    Direct(PathBuf),
}

/// Check that `path` may be written under `overwrite`, without writing anything: `Ok` when
/// it is absent, a regular file, or (with [`Overwrite::Force`]) a link to a regular file, a
/// device, a FIFO or a socket.
///
/// # Errors
/// [`AdapterError::UnsafeOutput`] naming what stands at `path`; [`AdapterError::Io`] when it
/// cannot be examined.
pub fn check_output(path: &Path, overwrite: Overwrite) -> Result<(), AdapterError> {
    resolve(path, overwrite).map(|_| ())
}

fn unsafe_output(path: &Path, kind: impl Into<String>) -> AdapterError {
    AdapterError::UnsafeOutput {
        path: path.to_path_buf(),
        kind: kind.into(),
    }
}

fn resolve(path: &Path, overwrite: Overwrite) -> Result<Destination, AdapterError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Destination::Replace {
                path: path.to_path_buf(),
                permissions: None,
            });
        }
        Err(e) => return Err(AdapterError::io(path, e)),
    };
    let t = meta.file_type();
    if t.is_file() {
        return Ok(Destination::Replace {
            path: path.to_path_buf(),
            permissions: Some(meta.permissions()),
        });
    }
    if t.is_dir() {
        return Err(unsafe_output(path, "a folder"));
    }
    if t.is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        if overwrite == Overwrite::RegularFile {
            return Err(unsafe_output(
                path,
                format!("a symbolic link (to {target}); it is kept as it is"),
            ));
        }
        let resolved = std::fs::canonicalize(path)
            .map_err(|_| unsafe_output(path, format!("a dangling symbolic link (to {target})")))?;
        return match resolve(&resolved, Overwrite::Force)? {
            Destination::Replace { permissions, .. } => Ok(Destination::Replace {
                path: resolved,
                permissions,
            }),
            direct => Ok(direct),
        };
    }
    match overwrite {
        Overwrite::RegularFile => Err(unsafe_output(
            path,
            format!("{}; it is kept as it is", file_kind(&t)),
        )),
        Overwrite::Force => Ok(Destination::Direct(path.to_path_buf())),
    }
}

/// A file written to its temporary location (or held for a direct write), not yet in place.
#[derive(Debug)]
pub(crate) struct Staged {
    target: PathBuf,
    inner: StagedInner,
}

#[derive(Debug)]
enum StagedInner {
    Temp(tempfile::NamedTempFile),
    Direct(Vec<u8>),
}

impl Staged {
    /// Write `fill`'s output for `path`: to a synced temporary file in the destination's
    /// folder (or into memory for a direct write).
    pub(crate) fn new(
        path: &Path,
        overwrite: Overwrite,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<Staged, AdapterError> {
        match resolve(path, overwrite)? {
            Destination::Direct(target) => {
                let mut bytes = Vec::new();
                fill(&mut bytes).map_err(|e| AdapterError::io(&target, e))?;
                Ok(Staged {
                    target,
                    inner: StagedInner::Direct(bytes),
                })
            }
            Destination::Replace {
                path: target,
                permissions,
            } => {
                let dir = match target.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let mut builder = tempfile::Builder::new();
                builder.prefix(".rora-").suffix(".tmp");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    // Masked by the umask at creation, as for any new file.
                    builder.permissions(Permissions::from_mode(0o666));
                }
                let tmp = builder
                    .tempfile_in(&dir)
                    .map_err(|e| AdapterError::io(&dir, e))?;
                if let Some(p) = permissions {
                    std::fs::set_permissions(tmp.path(), p)
                        .map_err(|e| AdapterError::io(tmp.path(), e))?;
                }
                {
                    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
                    fill(&mut w)
                        .and_then(|()| w.flush())
                        .map_err(|e| AdapterError::io(tmp.path(), e))?;
                }
                tmp.as_file()
                    .sync_all()
                    .map_err(|e| AdapterError::io(tmp.path(), e))?;
                Ok(Staged {
                    target,
                    inner: StagedInner::Temp(tmp),
                })
            }
        }
    }

    /// Put the file in place: rename the temporary file over the destination (then sync
    /// the folder), or write the bytes into the device.
    pub(crate) fn commit(self) -> Result<(), AdapterError> {
        match self.inner {
            StagedInner::Temp(tmp) => {
                tmp.persist(&self.target)
                    .map_err(|e| AdapterError::io(&self.target, e.error))?;
                // Make the rename itself durable; a folder that cannot be synced is no error.
                if let Some(dir) = self.target.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    if let Ok(d) = File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                Ok(())
            }
            StagedInner::Direct(bytes) => std::fs::OpenOptions::new()
                .write(true)
                .open(&self.target)
                .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.flush()))
                .map_err(|e| AdapterError::io(&self.target, e)),
        }
    }
}

/// Write `bytes` to `path` atomically (temporary file in the same folder, fsync, rename),
/// replacing only a regular file: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AdapterError> {
    write_atomic_with(path, bytes, Overwrite::default())
}

/// Write `bytes` to `path` atomically, replacing what [`Overwrite`] allows. If anything
/// fails, `path` keeps its previous content.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    overwrite: Overwrite,
) -> Result<(), AdapterError> {
    Staged::new(path, overwrite, |w| w.write_all(bytes))?.commit()
}

/// Write `tensors` to `path` as safetensors, atomically, replacing only a regular file:
/// see [`write_safetensors_atomic_with`].
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), AdapterError> {
    write_safetensors_atomic_with(path, tensors, metadata, Overwrite::default())
}

/// Write `tensors` to `path` as safetensors, atomically (temporary file in the same folder,
/// flushed, then renamed over `path`), replacing what [`Overwrite`] allows.
///
/// Before anything is written, every tensor is checked: its byte length must match its
/// shape and dtype, and a float tensor (F16, BF16, F32, F64) must hold no NaN or infinity
/// ([`AdapterError::NonFiniteOutput`] names the first that does). The file is streamed
/// from `tensors` (no second copy in memory). If anything fails, `path` keeps its previous
/// content.
pub fn write_safetensors_atomic_with(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Option<HashMap<String, String>>,
    overwrite: Overwrite,
) -> Result<(), AdapterError> {
    staged_safetensors(path, tensors, metadata, overwrite)?.commit()
}

/// Check and stage a safetensors file (see [`write_safetensors_atomic_with`]).
pub(crate) fn staged_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Option<HashMap<String, String>>,
    overwrite: Overwrite,
) -> Result<Staged, AdapterError> {
    let invalid = |message: String| AdapterError::InvalidSafetensors {
        path: path.to_path_buf(),
        message,
    };
    for (key, t) in tensors {
        let bits = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(t.dtype.bitsize()));
        if bits.is_none_or(|b| b % 8 != 0 || b / 8 != t.bytes.len()) {
            return Err(invalid(format!(
                "tensor {key:?}: {} bytes do not hold shape {:?} of {:?}",
                t.bytes.len(),
                t.shape,
                t.dtype
            )));
        }
        let count = non_finite_count(t.dtype, &t.bytes);
        if count > 0 {
            return Err(AdapterError::NonFiniteOutput {
                path: path.to_path_buf(),
                key: key.clone(),
                count,
            });
        }
    }
    // safetensors' own order: larger alignment first, then by name, so that every tensor's
    // data is aligned for its dtype in the file.
    let mut order: Vec<(&String, &RawTensor)> = tensors.iter().collect();
    order.sort_by(|(ln, l), (rn, r)| r.dtype.cmp(&l.dtype).then(ln.cmp(rn)));
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: serde_json::Map<String, serde_json::Value> = m
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for (key, t) in &order {
        let end = offset + t.bytes.len();
        header.insert(
            (*key).clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| invalid(e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    Staged::new(path, overwrite, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        for (_, t) in &order {
            w.write_all(&t.bytes)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_get_the_usual_mode_and_replaced_files_keep_theirs() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f.json");
            write_atomic(&p, b"{}").unwrap();
            // What a plain File::create gets under the current umask.
            let q = dir.path().join("plain");
            File::create(&q).unwrap();
            let want = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, want, "{got:o} vs {want:o}");
            std::fs::set_permissions(&p, Permissions::from_mode(0o640)).unwrap();
            write_atomic(&p, b"{\"a\":1}").unwrap();
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, 0o640);
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused_unless_forced_then_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.bin");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.bin");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_atomic(&link, b"new").unwrap_err();
        assert!(
            matches!(err, AdapterError::UnsafeOutput { .. })
                && err.to_string().contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        write_atomic_with(&link, b"new", Overwrite::Force).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(write_atomic_with(&dangling, b"x", Overwrite::Force).is_err());
        assert!(!dir.path().join("nowhere").exists());
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_refused_unless_forced() {
        let null = Path::new("/dev/null");
        if !null.exists() {
            return;
        }
        let err = write_atomic(null, b"x").unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        assert!(!std::fs::metadata(null).unwrap().file_type().is_file());
        write_atomic_with(null, b"x", Overwrite::Force).unwrap();
        assert!(!std::fs::metadata(null).unwrap().file_type().is_file());
    }

    #[test]
    fn folders_are_always_refused() {
        let dir = tempfile::tempdir().unwrap();
        for o in [Overwrite::RegularFile, Overwrite::Force] {
            assert!(matches!(
                write_atomic_with(dir.path(), b"x", o),
                Err(AdapterError::UnsafeOutput { .. })
            ));
        }
    }

    #[test]
    fn non_finite_tensors_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        std::fs::write(&p, b"previous").unwrap();
        for (dtype, bytes) in [
            (safetensors::Dtype::F32, f32::NAN.to_le_bytes().to_vec()),
            (
                safetensors::Dtype::F64,
                f64::INFINITY.to_le_bytes().to_vec(),
            ),
            (
                safetensors::Dtype::F16,
                half::f16::NEG_INFINITY.to_le_bytes().to_vec(),
            ),
            (
                safetensors::Dtype::BF16,
                half::bf16::NAN.to_le_bytes().to_vec(),
            ),
        ] {
            let mut t = BTreeMap::new();
            t.insert(
                "w".to_string(),
                RawTensor {
                    dtype,
                    shape: vec![1],
                    bytes,
                },
            );
            let err = write_safetensors_atomic(&p, &t, None).unwrap_err();
            assert!(
                matches!(&err, AdapterError::NonFiniteOutput { key, count: 1, .. } if key == "w"),
                "{dtype:?}: {err}"
            );
            assert_eq!(std::fs::read(&p).unwrap(), b"previous");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    #[test]
    fn written_files_parse_back_with_metadata_and_mixed_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let mut t = BTreeMap::new();
        t.insert(
            "a".to_string(),
            RawTensor::f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]),
        );
        t.insert(
            "b".to_string(),
            RawTensor {
                dtype: safetensors::Dtype::F16,
                shape: vec![3],
                bytes: vec![0; 6],
            },
        );
        t.insert(
            "c".to_string(),
            RawTensor {
                dtype: safetensors::Dtype::I64,
                shape: vec![1],
                bytes: 7i64.to_le_bytes().to_vec(),
            },
        );
        let meta: HashMap<String, String> = [("format".into(), "pt".into())].into();
        write_safetensors_atomic(&p, &t, Some(meta.clone())).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().data(), &t["a"].bytes[..]);
        assert_eq!(st.tensor("c").unwrap().data(), &t["c"].bytes[..]);
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(m.metadata().as_ref(), Some(&meta));

        let bad: BTreeMap<String, RawTensor> =
            [("x".to_string(), RawTensor::f32(vec![3], &[1.0]))].into();
        assert!(matches!(
            write_safetensors_atomic(&p, &bad, None),
            Err(AdapterError::InvalidSafetensors { .. })
        ));
    }
}
