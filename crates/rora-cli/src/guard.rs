//! Protecting inputs and outputs: an output never aliases an input, and only a regular file
//! (or nothing) stands where an output goes unless `--force` says otherwise.
//!
//! These checks run before any work, so a bad `--out` fails at once; the writers in
//! `rora-peft` check the destination again when they write.

use std::path::{Path, PathBuf};

use rora_peft::{AdapterError, CONFIG_FILE, Overwrite, WEIGHTS_FILE, check_output};

use crate::error::CliError;

/// One input file of a command, for the aliasing check.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// What it is, for the message (`"base checkpoint"`, `"adapter weights"`, ...).
    pub what: &'static str,
    /// Its path as given.
    pub path: &'a Path,
}

/// The inputs of a command reading `base` and the adapter folder `adapter`.
pub fn inputs<'a>(base: &'a Path, adapter: &'a Path) -> Vec<(Input<'a>, PathBuf)> {
    vec![
        (
            Input {
                what: "base checkpoint (--base)",
                path: base,
            },
            base.to_path_buf(),
        ),
        (
            Input {
                what: "adapter weights (--adapter)",
                path: adapter,
            },
            adapter.join(WEIGHTS_FILE),
        ),
        (
            Input {
                what: "adapter config (--adapter)",
                path: adapter,
            },
            adapter.join(CONFIG_FILE),
        ),
    ]
}

/// The path `p` will have once written: symbolic links resolved, the file itself possibly
/// absent (then its folder is resolved). `None` when the folder does not exist.
fn canonical_target(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).ok().map(|d| d.join(name))
}

/// Whether `a` and `b` are the same existing file (same device and inode on Unix): catches
/// hard links and bind mounts that canonical paths miss.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    let _ = (a, b);
    false
}

/// Refuse an output file `out` (given as `--out` = `flag`) that is, or resolves to, one of
/// `inputs`, then check what stands at `out` against `overwrite`.
pub fn check_output_file(
    flag: &Path,
    out: &Path,
    inputs: &[(Input<'_>, PathBuf)],
    overwrite: Overwrite,
) -> Result<(), CliError> {
    let target = canonical_target(out);
    for (input, file) in inputs {
        let aliased = match (&target, std::fs::canonicalize(file)) {
            (Some(t), Ok(f)) => *t == f,
            _ => false,
        } || same_file(out, file);
        if aliased {
            return Err(CliError::OutputIsInput {
                out: flag.to_path_buf(),
                input: input.path.to_path_buf(),
                what: input.what,
            });
        }
    }
    check_output(out, overwrite).map_err(unsafe_output)
}

/// Checks for an output adapter folder `out`: it is a folder or absent, it is not the
/// input adapter folder, and neither file to be written aliases an input or is something
/// other than a regular file (unless forced).
pub fn check_output_dir(
    out: &Path,
    inputs: &[(Input<'_>, PathBuf)],
    overwrite: Overwrite,
) -> Result<(), CliError> {
    if let Ok(m) = std::fs::metadata(out)
        && !m.is_dir()
    {
        return Err(CliError::file(
            "output",
            out,
            AdapterError::NotADirectory {
                path: out.to_path_buf(),
            },
        ));
    }
    if let (Ok(o), Some((input, _))) = (
        std::fs::canonicalize(out),
        inputs.iter().find(|(i, _)| i.what.contains("--adapter")),
    ) && std::fs::canonicalize(input.path).is_ok_and(|a| a == o)
    {
        return Err(CliError::OutputIsInput {
            out: out.to_path_buf(),
            input: input.path.to_path_buf(),
            what: "adapter folder (--adapter)",
        });
    }
    for name in [WEIGHTS_FILE, CONFIG_FILE] {
        check_output_file(out, &out.join(name), inputs, overwrite)?;
    }
    Ok(())
}

/// Wrap a destination refusal with the `--force` hint where forcing would help.
pub fn unsafe_output(e: AdapterError) -> CliError {
    match e {
        AdapterError::UnsafeOutput { .. } => CliError::UnsafeOutput(e),
        other => CliError::file("output", Path::new(""), other),
    }
}
