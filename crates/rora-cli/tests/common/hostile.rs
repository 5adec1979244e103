//! A generator of hostile inputs for the `rora` command line: each [`Case`] damages a
//! scratch copy of the `peft-mlp` fixture (or the command line) in one way and says how
//! every command must react.
//!
//! The scratch folder holds the inputs and previous outputs a user could lose:
//!
//! ```text
//! model.safetensors                  base checkpoint
//! adapter/adapter_config.json        adapter
//! adapter/adapter_model.safetensors
//! out/merged.safetensors             a previous `merge --out`
//! out/rescaled/adapter_*             a previous `rescale --out`
//! other/                             symbolic-link targets and the like
//! ```
//!
//! `tests/bad_input.rs` runs every case and checks the exit status, the message, and that
//! every file under the scratch folder is byte for byte (and mode for mode) as before.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::fixture;

/// A scratch copy of the `peft-mlp` fixture with previous outputs in place.
pub struct Scratch {
    /// The scratch folder (removed on drop).
    pub dir: tempfile::TempDir,
}

/// A previous `merge` output: whatever it holds must survive a failed run.
pub const PREVIOUS_MERGE: &[u8] = b"previous merged model";

impl Scratch {
    /// A fresh copy of the fixture `peft-mlp`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = fixture("peft-mlp");
        for d in ["adapter", "out/rescaled", "other"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in [
            "model.safetensors",
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
        ] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(dir.path().join("out/merged.safetensors"), PREVIOUS_MERGE).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(
                src.join("adapter").join(f),
                dir.path().join("out/rescaled").join(f),
            )
            .unwrap();
        }
        Scratch { dir }
    }
    /// Replace the base checkpoint and the adapter by those of fixture `name` (the previous
    /// outputs stay as they are).
    pub fn use_fixture(&self, name: &str) {
        let src = fixture(name);
        for f in [
            "model.safetensors",
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
        ] {
            std::fs::copy(src.join(f), self.dir.path().join(f)).unwrap();
        }
    }
    /// A path under the scratch folder.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// The base checkpoint.
    pub fn base(&self) -> PathBuf {
        self.p("model.safetensors")
    }
    /// The adapter folder.
    pub fn adapter(&self) -> PathBuf {
        self.p("adapter")
    }
    /// The adapter's weights file.
    pub fn weights(&self) -> PathBuf {
        self.p("adapter/adapter_model.safetensors")
    }
    /// The adapter's config file.
    pub fn config(&self) -> PathBuf {
        self.p("adapter/adapter_config.json")
    }

    /// `inspect` and `inspect --json` on the scratch inputs.
    pub fn inspect(&self) -> Vec<Vec<OsString>> {
        let args = |json: bool| {
            let mut a = argv(&["inspect", "--base"]);
            a.push(self.base().into());
            a.push("--adapter".into());
            a.push(self.adapter().into());
            if json {
                a.push("--json".into());
            }
            a
        };
        vec![args(false), args(true)]
    }
    /// `merge` with base, adapter and output as given.
    pub fn merge_with(&self, base: &Path, adapter: &Path, out: &Path) -> Vec<OsString> {
        let mut a = argv(&["merge", "--base"]);
        a.extend([
            base.into(),
            "--adapter".into(),
            adapter.into(),
            "--out".into(),
            out.into(),
        ]);
        a
    }
    /// `merge` onto the previous output `out/merged.safetensors`.
    pub fn merge(&self) -> Vec<OsString> {
        self.merge_with(
            &self.base(),
            &self.adapter(),
            &self.p("out/merged.safetensors"),
        )
    }
    /// `rescale` with base, adapter and output as given.
    pub fn rescale_with(&self, base: &Path, adapter: &Path, out: &Path) -> Vec<OsString> {
        let mut a = argv(&["rescale", "--base"]);
        a.extend([
            base.into(),
            "--adapter".into(),
            adapter.into(),
            "--out".into(),
            out.into(),
        ]);
        a
    }
    /// `rescale` onto the previous output `out/rescaled`.
    pub fn rescale(&self) -> Vec<OsString> {
        self.rescale_with(&self.base(), &self.adapter(), &self.p("out/rescaled"))
    }
    /// `combine --adapter DIR=W ... --out OUT` (and `extra`).
    pub fn combine(&self, inputs: &[(&Path, &str)], out: &Path, extra: &[&str]) -> Vec<OsString> {
        let mut a = argv(&["combine"]);
        for (dir, w) in inputs {
            let mut spec = OsString::from(dir.as_os_str());
            spec.push(format!("={w}"));
            a.push("--adapter".into());
            a.push(spec);
        }
        a.push("--out".into());
        a.push(out.into());
        a.extend(extra.iter().map(OsString::from));
        a
    }
    /// Every command: both inspects, merge, rescale.
    pub fn all(&self) -> Vec<Vec<OsString>> {
        let mut v = self.inspect();
        v.push(self.merge());
        v.push(self.rescale());
        v
    }

    /// Replace the adapter config's key `key` by the JSON `value` (`None`: remove it).
    pub fn set_config(&self, key: &str, value: Option<serde_json::Value>) {
        let mut c: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(self.config()).unwrap()).unwrap();
        match value {
            Some(v) => {
                c.insert(key.into(), v);
            }
            None => {
                c.remove(key);
            }
        }
        std::fs::write(
            self.config(),
            serde_json::to_string_pretty(&serde_json::Value::Object(c)).unwrap(),
        )
        .unwrap();
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Arguments from strings.
pub fn argv(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// Append `extra` to each command line.
pub fn with(mut runs: Vec<Vec<OsString>>, extra: &[&str]) -> Vec<Vec<OsString>> {
    for r in &mut runs {
        r.extend(extra.iter().map(OsString::from));
    }
    runs
}

/// One tensor as it will be written: any dtype name (even an invalid one), shape, bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub name: String,
    /// The dtype as written in the header.
    pub dtype: String,
    /// The shape as written in the header.
    pub shape: Vec<usize>,
    /// The data.
    pub bytes: Vec<u8>,
}

/// The tensors of a safetensors file (F32 only, as the fixture is), in header order.
pub fn read_entries(path: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            Entry {
                name: n.to_string(),
                dtype: format!("{:?}", t.dtype()),
                shape: t.shape().to_vec(),
                bytes: t.data().to_vec(),
            }
        })
        .collect()
}

/// F32 values as bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bytes as F32 values.
pub fn f32_values(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A safetensors file from entries, with consistent offsets (the header says exactly what
/// the entries say, however wrong that is).
pub fn raw_safetensors(entries: &[Entry]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0;
    let mut data = Vec::new();
    for e in entries {
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [at, at + e.bytes.len()]}),
        );
        at += e.bytes.len();
        data.extend_from_slice(&e.bytes);
    }
    raw_file(&serde_json::Value::Object(header).to_string(), &data)
}

/// A safetensors file from a header text and data, as given.
pub fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Rewrite the safetensors file at `path` after changing its entries with `f`.
pub fn edit_tensors(path: &Path, f: impl FnOnce(&mut Vec<Entry>)) {
    let mut e = read_entries(path);
    f(&mut e);
    std::fs::write(path, raw_safetensors(&e)).unwrap();
}

/// Change the values of tensor `name` in the safetensors file at `path`.
pub fn edit_values(path: &Path, name: &str, f: impl FnOnce(&mut Vec<f32>)) {
    edit_tensors(path, |es| {
        let e = es.iter_mut().find(|e| e.name == name).expect("tensor");
        let mut v = f32_values(&e.bytes);
        f(&mut v);
        e.bytes = f32_bytes(&v);
    });
}

/// What one case expects of each command line it runs.
pub struct Expect {
    /// The command lines (without the program name).
    pub runs: Vec<Vec<OsString>>,
    /// The exit status: 1 for errors, 2 for usage errors.
    pub code: i32,
    /// Strings the error message must contain (file, key, shape, ...).
    pub names: Vec<String>,
}

/// A hostile case: a name and a function that damages a scratch folder and says what to
/// expect.
pub struct Case {
    /// What the case does.
    pub name: &'static str,
    /// Damage the scratch folder; return the expectations.
    pub setup: fn(&Scratch) -> Expect,
}

fn expect(runs: Vec<Vec<OsString>>, names: &[&str]) -> Expect {
    Expect {
        runs,
        code: 1,
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

fn usage(runs: Vec<Vec<OsString>>, names: &[&str]) -> Expect {
    Expect {
        code: 2,
        ..expect(runs, names)
    }
}

const A1: &str = "base_model.model.fc1.lora_A.weight";
const B1: &str = "base_model.model.fc1.lora_B.weight";
const M1: &str = "base_model.model.fc1.lora_magnitude_vector";

/// Truncate the file at `path` to `len` bytes.
fn truncate(path: &Path, len: impl FnOnce(usize) -> usize) {
    let b = std::fs::read(path).unwrap();
    let n = len(b.len());
    std::fs::write(path, &b[..n]).unwrap();
}

/// The header length and text of a safetensors file, and its data.
fn split(path: &Path) -> (String, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (
        String::from_utf8(b[8..8 + n].to_vec()).unwrap(),
        b[8 + n..].to_vec(),
    )
}

/// Damage the header text of the file at `path` with `f`.
fn edit_header(path: &Path, f: impl FnOnce(String) -> String) {
    let (h, d) = split(path);
    std::fs::write(path, raw_file(&f(h), &d)).unwrap();
}

/// Every case. Each is independent: it gets its own scratch folder.
pub fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    macro_rules! case {
        ($name:expr, $f:expr) => {
            v.push(Case {
                name: $name,
                setup: $f,
            })
        };
    }

    // ---- Missing or misplaced inputs -------------------------------------------------
    case!("base missing", |s| {
        std::fs::remove_file(s.base()).unwrap();
        expect(s.all(), &["model.safetensors", "No such file"])
    });
    case!("adapter weights missing", |s| {
        std::fs::remove_file(s.weights()).unwrap();
        expect(s.all(), &["adapter_model.safetensors"])
    });
    case!("adapter config missing", |s| {
        std::fs::remove_file(s.config()).unwrap();
        expect(s.all(), &["adapter_config.json"])
    });
    case!("adapter folder missing", |s| {
        std::fs::rename(s.adapter(), s.p("other/adapter")).unwrap();
        expect(s.all(), &["adapter", "No such file"])
    });
    case!("adapter path is a file", |s| {
        let runs = vec![
            s.merge_with(&s.base(), &s.weights(), &s.p("out/merged.safetensors")),
            s.rescale_with(&s.base(), &s.config(), &s.p("out/rescaled")),
        ];
        expect(runs, &["adapter_", "not a folder"])
    });
    case!("base path is a folder", |s| {
        let runs = vec![
            s.merge_with(&s.adapter(), &s.adapter(), &s.p("out/merged.safetensors")),
            s.rescale_with(&s.p("other"), &s.adapter(), &s.p("out/rescaled")),
        ];
        expect(runs, &["is a folder, not a regular file"])
    });
    case!("adapter weights file is a folder", |s| {
        std::fs::remove_file(s.weights()).unwrap();
        std::fs::create_dir(s.weights()).unwrap();
        expect(s.all(), &["adapter_model.safetensors", "a folder"])
    });
    case!("base is a character device", |s| {
        let runs = vec![
            s.merge_with(
                Path::new("/dev/null"),
                &s.adapter(),
                &s.p("out/merged.safetensors"),
            ),
            s.rescale_with(Path::new("/dev/zero"), &s.adapter(), &s.p("out/rescaled")),
        ];
        expect(runs, &["/dev/", "character device"])
    });

    // ---- Malformed safetensors (base and adapter weights) ----------------------------
    case!("base: empty file", |s| {
        std::fs::write(s.base(), b"").unwrap();
        expect(s.all(), &["model.safetensors", "invalid safetensors"])
    });
    case!("base: 5 bytes", |s| {
        truncate(&s.base(), |_| 5);
        expect(s.all(), &["model.safetensors", "header too small"])
    });
    case!("base: truncated in the header", |s| {
        truncate(&s.base(), |_| 40);
        expect(s.all(), &["model.safetensors", "invalid safetensors"])
    });
    case!("base: truncated in the data", |s| {
        truncate(&s.base(), |n| n - 3);
        expect(
            s.all(),
            &["model.safetensors", "\"fc2.weight\"", "past the end"],
        )
    });
    case!("base: trailing garbage", |s| {
        let mut b = std::fs::read(s.base()).unwrap();
        b.extend_from_slice(b"garbage");
        std::fs::write(s.base(), b).unwrap();
        expect(s.all(), &["model.safetensors", "cover 3232 bytes"])
    });
    case!("base: header length beyond the file", |s| {
        let mut b = std::fs::read(s.base()).unwrap();
        let twice = b.len() as u64 * 2;
        b[..8].copy_from_slice(&twice.to_le_bytes());
        std::fs::write(s.base(), b).unwrap();
        expect(s.all(), &["model.safetensors", "invalid safetensors"])
    });
    case!("base: header length 2^64-1", |s| {
        let mut b = std::fs::read(s.base()).unwrap();
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(s.base(), b).unwrap();
        expect(s.all(), &["model.safetensors", "invalid safetensors"])
    });
    case!("base: header not UTF-8", |s| {
        let mut b = std::fs::read(s.base()).unwrap();
        b[9] = 0xff;
        std::fs::write(s.base(), b).unwrap();
        expect(s.all(), &["model.safetensors", "UTF-8"])
    });
    case!("base: header a JSON array", |s| {
        edit_header(&s.base(), |h| format!("[{}]", &h[1..h.len() - 1]));
        expect(s.all(), &["model.safetensors", "invalid JSON"])
    });
    case!("base: unknown dtype", |s| {
        edit_header(&s.base(), |h| h.replacen("\"F32\"", "\"F33\"", 1));
        expect(
            s.all(),
            &["model.safetensors", "\"fc1.bias\"", "unknown dtype"],
        )
    });
    case!("base: shape does not match the bytes", |s| {
        edit_header(&s.base(), |h| h.replace("[32,16]", "[32,17]"));
        expect(
            s.all(),
            &[
                "model.safetensors",
                "\"fc1.weight\"",
                "[32, 17]",
                "needs 2176 bytes",
            ],
        )
    });
    case!("base: overlapping offsets", |s| {
        edit_header(&s.base(), |h| h.replace("[2176,2208]", "[2170,2202]"));
        expect(s.all(), &["model.safetensors", "\"fc2.bias\"", "overlap"])
    });
    case!("base: negative shape", |s| {
        edit_header(&s.base(), |h| h.replace("[32]", "[-32]"));
        expect(s.all(), &["model.safetensors", "\"fc1.bias\"", "shape"])
    });
    case!("adapter: empty file", |s| {
        std::fs::write(s.weights(), b"").unwrap();
        expect(
            s.all(),
            &["adapter_model.safetensors", "invalid safetensors"],
        )
    });
    case!("adapter: truncated in the data", |s| {
        truncate(&s.weights(), |n| n / 2 + 300);
        expect(s.all(), &["adapter_model.safetensors", "past the end"])
    });
    case!("adapter: unknown dtype names the tensor", |s| {
        edit_header(&s.weights(), |h| h.replacen("\"F32\"", "\"Q4\"", 1));
        expect(s.all(), &["adapter_model.safetensors", A1, "unknown dtype"])
    });
    case!("adapter: shape does not match the bytes", |s| {
        edit_header(&s.weights(), |h| h.replacen("[4,16]", "[4,15]", 1));
        expect(s.all(), &["adapter_model.safetensors", A1, "[4, 15]"])
    });
    case!("adapter: header is not JSON", |s| {
        edit_header(&s.weights(), |h| h.replacen('{', "<", 1));
        expect(s.all(), &["adapter_model.safetensors", "invalid JSON"])
    });

    // ---- Adapter tensors that do not fit ---------------------------------------------
    case!("adapter: no tensors", |s| {
        std::fs::write(s.weights(), raw_safetensors(&[])).unwrap();
        expect(s.all(), &["adapter_model.safetensors", "no tensors"])
    });
    case!("adapter: 1-D lora_A", |s| {
        edit_tensors(&s.weights(), |es| es[0].shape = vec![64]);
        expect(
            s.all(),
            &["adapter_model.safetensors", A1, "[64]", "2-D", "[r, in]"],
        )
    });
    case!("adapter: transposed lora_A", |s| {
        edit_tensors(&s.weights(), |es| es[0].shape = vec![16, 4]);
        expect(
            s.all(),
            &[
                "adapter_model.safetensors",
                A1,
                "[16, 4]",
                "[in, r] would be the transpose",
            ],
        )
    });
    case!("adapter: lora_B of the wrong rank", |s| {
        edit_tensors(&s.weights(), |es| {
            es[1].shape = vec![16, 8];
        });
        expect(
            s.all(),
            &["adapter_model.safetensors", B1, "[16, 8]", "r = 4"],
        )
    });
    case!("adapter: zero-size lora_A", |s| {
        edit_tensors(&s.weights(), |es| {
            es[0].shape = vec![4, 0];
            es[0].bytes.clear();
        });
        expect(s.all(), &["adapter_model.safetensors", A1, "[4, 0]"])
    });
    case!("adapter: lora_B missing", |s| {
        edit_tensors(&s.weights(), |es| es.retain(|e| e.name != B1));
        expect(
            s.all(),
            &["adapter_model.safetensors", "missing tensor", B1],
        )
    });
    case!("adapter: unexpected tensor", |s| {
        edit_tensors(&s.weights(), |es| {
            es.push(Entry {
                name: "base_model.model.fc1.bias".into(),
                dtype: "F32".into(),
                shape: vec![32],
                bytes: vec![0; 128],
            })
        });
        expect(
            s.all(),
            &["adapter_model.safetensors", "unexpected tensor", "fc1.bias"],
        )
    });
    case!("adapter: integer dtype", |s| {
        edit_tensors(&s.weights(), |es| es[0].dtype = "I32".into());
        expect(
            s.all(),
            &["adapter_model.safetensors", A1, "unsupported dtype I32"],
        )
    });
    case!("adapter: NaN in lora_A", |s| {
        edit_values(&s.weights(), A1, |v| v[3] = f32::NAN);
        expect(s.all(), &["adapter_model.safetensors", A1, "non-finite"])
    });
    case!("adapter: infinity in lora_B", |s| {
        edit_values(&s.weights(), B1, |v| v[0] = f32::NEG_INFINITY);
        expect(s.all(), &["adapter_model.safetensors", B1, "non-finite"])
    });
    case!("adapter: layer absent from the base", |s| {
        edit_tensors(&s.base(), |es| es.retain(|e| e.name != "fc2.weight"));
        expect(s.all(), &["\"fc2\"", "\"fc2.weight\"", "model.safetensors"])
    });
    case!("base: weight of the wrong shape", |s| {
        edit_tensors(&s.base(), |es| {
            let e = es.iter_mut().find(|e| e.name == "fc1.weight").unwrap();
            e.shape = vec![16, 32];
        });
        expect(
            s.all(),
            &["\"fc1\"", "\"fc1.weight\"", "[16, 32]", "model.safetensors"],
        )
    });
    case!("base: 1-D weight", |s| {
        edit_tensors(&s.base(), |es| {
            let e = es.iter_mut().find(|e| e.name == "fc1.weight").unwrap();
            e.shape = vec![512];
        });
        expect(s.all(), &["\"fc1.weight\"", "[512]", "model.safetensors"])
    });
    case!("base: integer weight", |s| {
        edit_tensors(&s.base(), |es| {
            let e = es.iter_mut().find(|e| e.name == "fc1.weight").unwrap();
            e.dtype = "I32".into();
        });
        expect(s.all(), &["\"fc1.weight\"", "I32", "model.safetensors"])
    });

    // ---- Config ----------------------------------------------------------------------
    case!("config: not JSON", |s| {
        std::fs::write(s.config(), b"{\"peft_type\": \"LORA\",").unwrap();
        expect(s.all(), &["adapter_config.json", "invalid adapter config"])
    });
    case!("config: a folder", |s| {
        std::fs::remove_file(s.config()).unwrap();
        std::fs::create_dir(s.config()).unwrap();
        expect(s.all(), &["adapter_config.json"])
    });
    case!("config: peft_type IA3", |s| {
        s.set_config("peft_type", Some("IA3".into()));
        expect(s.all(), &["IA3"])
    });
    case!("config: no peft_type", |s| {
        s.set_config("peft_type", None);
        expect(s.all(), &["adapter_config.json", "peft_type"])
    });
    case!("config: r = 0", |s| {
        s.set_config("r", Some(0.into()));
        expect(s.all(), &["adapter_config.json", "r must be at least 1"])
    });
    case!("config: r negative", |s| {
        s.set_config("r", Some((-4).into()));
        expect(s.all(), &["adapter_config.json", "invalid adapter config"])
    });
    case!("config: r does not match the tensors", |s| {
        s.set_config("r", Some(8.into()));
        expect(s.all(), &["adapter_model.safetensors", A1, "r = 8"])
    });
    case!("config: rank_pattern does not match the tensors", |s| {
        s.set_config("rank_pattern", Some(serde_json::json!({"fc2": 2})));
        expect(
            s.all(),
            &["adapter_model.safetensors", "fc2.lora_A.weight", "r = 2"],
        )
    });
    case!("config: lora_alpha a string", |s| {
        s.set_config("lora_alpha", Some("eight".into()));
        expect(s.all(), &["adapter_config.json", "invalid adapter config"])
    });
    case!("config: use_dora", |s| {
        s.set_config("use_dora", Some(true.into()));
        expect(s.all(), &["use_dora"])
    });
    case!("config: fan_in_fan_out", |s| {
        s.set_config("fan_in_fan_out", Some(true.into()));
        expect(s.all(), &["fan_in_fan_out"])
    });
    case!("config: a target_modules name matches no tensor", |s| {
        s.set_config(
            "target_modules",
            Some(serde_json::json!(["fc1", "fc2", "fc3"])),
        );
        expect(
            s.all(),
            &["adapter_config.json", "target_modules", "fc3", "fc1, fc2"],
        )
    });
    case!("config: a target_modules regex matches no tensor", |s| {
        s.set_config("target_modules", Some(r"layers\.\d+\.q_proj".into()));
        expect(s.all(), &["adapter_config.json", "q_proj"])
    });

    // ---- DoRA and embedding adapters ------------------------------------------------
    case!("dora: magnitude of the wrong length", |s| {
        s.use_fixture("peft-mlp-dora");
        edit_tensors(&s.weights(), |es| {
            let e = es.iter_mut().find(|e| e.name == M1).unwrap();
            e.shape = vec![31];
            e.bytes.truncate(31 * 4);
        });
        expect(
            s.all(),
            &["adapter_model.safetensors", M1, "[31]", "[out = 32]"],
        )
    });
    case!("dora: 2-D magnitude", |s| {
        s.use_fixture("peft-mlp-dora");
        edit_tensors(&s.weights(), |es| {
            es.iter_mut().find(|e| e.name == M1).unwrap().shape = vec![4, 8];
        });
        expect(s.all(), &["adapter_model.safetensors", M1, "[4, 8]", "1-D"])
    });
    case!("dora: NaN in the magnitude", |s| {
        s.use_fixture("peft-mlp-dora");
        edit_values(&s.weights(), M1, |v| v[5] = f32::NAN);
        expect(s.all(), &["adapter_model.safetensors", M1, "non-finite"])
    });
    case!("dora: magnitude missing", |s| {
        s.use_fixture("peft-mlp-dora");
        edit_tensors(&s.weights(), |es| es.retain(|e| e.name != M1));
        expect(s.all(), &["\"fc1\"", "use_dora = true", M1])
    });
    case!("dora: magnitude without use_dora", |s| {
        s.use_fixture("peft-mlp-dora");
        s.set_config("use_dora", Some(false.into()));
        expect(s.all(), &["\"fc1\"", M1, "use_dora = false"])
    });
    case!("dora: a zero row cannot be normalised", |s| {
        // Row 0 of fc1's W0 and of its update are zero: ‖W0 + s·B·A‖ = 0 for that row.
        s.use_fixture("peft-mlp-dora");
        edit_values(&s.base(), "fc1.weight", |v| v[..16].fill(0.0));
        edit_values(&s.weights(), B1, |v| v[..4].fill(0.0));
        expect(
            vec![s.merge()],
            &["\"fc1\"", "\"fc1.weight\"", "not finite", "nothing written"],
        )
    });
    case!("embedding: base table transposed", |s| {
        s.use_fixture("peft-embedding");
        edit_tensors(&s.base(), |es| {
            es.iter_mut()
                .find(|e| e.name == "emb.weight")
                .unwrap()
                .shape = vec![6, 12];
        });
        expect(
            s.all(),
            &[
                "\"emb\"",
                "embedding layer",
                "\"emb.weight\"",
                "[6, 12]",
                "[12, 6]",
            ],
        )
    });
    case!("embedding: linear and embedding names mixed", |s| {
        s.use_fixture("peft-embedding");
        edit_tensors(&s.weights(), |es| {
            let e = es
                .iter_mut()
                .find(|e| e.name == "base_model.model.emb.lora_embedding_B")
                .unwrap();
            e.name = "base_model.model.emb.lora_B.weight".into();
        });
        expect(
            s.all(),
            &[
                "adapter_model.safetensors",
                "\"emb\"",
                "mixes",
                "lora_embedding_A",
            ],
        )
    });

    // ---- Named adapters and combinations -------------------------------------------
    case!("adapter name that does not exist", |s| {
        expect(
            with(s.all(), &["--adapter-name", "nope"]),
            &["adapter", "\"nope\"", "default", "--adapter-name"],
        )
    });
    case!("multi-adapter folder without a default, no name", |s| {
        let task = s.p("adapter/task");
        std::fs::create_dir(&task).unwrap();
        std::fs::rename(s.config(), task.join("adapter_config.json")).unwrap();
        std::fs::rename(s.weights(), task.join("adapter_model.safetensors")).unwrap();
        expect(
            s.all(),
            &["adapter", "multi-adapter", "task", "--adapter-name"],
        )
    });
    case!("combine: a DoRA adapter", |s| {
        s.use_fixture("peft-mlp-dora");
        let a = s.adapter();
        expect(
            vec![s.combine(&[(&a, "0.5"), (&a, "0.5")], &s.p("out/rescaled"), &[])],
            &["combine", "DoRA", "use_dora"],
        )
    });
    case!("combine: linear needs equal ranks", |s| {
        let other = s.p("other/rs");
        std::fs::create_dir(&other).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(
                fixture("peft-mlp-rslora").join("adapter").join(f),
                other.join(f),
            )
            .unwrap();
        }
        let a = s.adapter();
        let out = s.p("out/rescaled");
        expect(
            vec![s.combine(
                &[(&a, "1"), (&other, "1")],
                &out,
                &["--combination", "linear"],
            )],
            &["same rank", "[4, 8]"],
        )
    });
    case!("combine: a layer of two shapes", |s| {
        let other = s.p("other/rs");
        std::fs::create_dir(&other).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(
                fixture("peft-mlp-rslora").join("adapter").join(f),
                other.join(f),
            )
            .unwrap();
        }
        let a = s.adapter();
        expect(
            vec![s.combine(&[(&a, "1"), (&other, "1")], &s.p("out/rescaled"), &[])],
            &["\"fc2\"", "[8, 32]", "[6, 20]"],
        )
    });
    case!("combine --out is an input", |s| {
        let a = s.adapter();
        expect(
            vec![
                s.combine(&[(&a, "1")], &a, &[]),
                s.combine(&[(&a, "1")], &a, &["--force"]),
            ],
            &["--out", "adapter"],
        )
    });
    case!("usage: combine without --adapter, with a bad weight", |s| {
        let a = s.adapter();
        let mut spec = OsString::from(a.as_os_str());
        spec.push("=heavy");
        usage(
            vec![
                argv(&["combine", "--out", "x"]),
                vec![
                    "combine".into(),
                    "--adapter".into(),
                    spec,
                    "--out".into(),
                    "x".into(),
                ],
                s.combine(&[(&a, "1")], &s.p("x"), &["--combination", "ties"]),
            ],
            &[],
        )
    });

    // ---- Non-finite or degenerate results --------------------------------------------
    case!("merge: lora_alpha = 1e308 overflows every weight", |s| {
        s.set_config("lora_alpha", Some(1e308.into()));
        let mut runs = s.inspect();
        runs.push(s.merge());
        runs.push(s.rescale());
        expect(runs, &["\"fc1\""])
    });
    case!("merge: huge lora_B overflows float32", |s| {
        edit_values(&s.weights(), B1, |v| v.fill(f32::MAX));
        expect(
            vec![s.merge()],
            &[
                "\"fc1\"",
                "\"fc1.weight\"",
                "not finite in F32",
                "nothing written",
            ],
        )
    });
    case!("merge: float16 base overflows", |s| {
        // The base in F16; one lora_B entry makes W0 + s·B·A exceed 65504.
        edit_tensors(&s.base(), |es| {
            for e in es.iter_mut() {
                let v = f32_values(&e.bytes);
                e.bytes = v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect();
                e.dtype = "F16".into();
            }
        });
        edit_values(&s.weights(), B1, |v| v[..4].fill(3e5));
        expect(
            vec![s.merge()],
            &["\"fc1\"", "\"fc1.weight\"", "not finite in F16"],
        )
    });
    case!("base: NaN in an adapted weight", |s| {
        edit_values(&s.base(), "fc1.weight", |v| v[7] = f32::NAN);
        expect(
            s.all(),
            &[
                "base tensor \"fc1.weight\"",
                "model.safetensors",
                "non-finite",
            ],
        )
    });
    case!("base: NaN in a copied tensor", |s| {
        edit_values(&s.base(), "fc2.bias", |v| v[0] = f32::INFINITY);
        expect(
            vec![s.merge()],
            &[
                "\"fc2.bias\"",
                "model.safetensors",
                "copied",
                "nothing written",
            ],
        )
    });
    case!("rescale: zero base weight", |s| {
        edit_values(&s.base(), "fc1.weight", |v| v.fill(0.0));
        expect(
            vec![s.rescale()],
            &[
                "\"fc1\"",
                "\"fc1.weight\"",
                "all zeros",
                "model.safetensors",
            ],
        )
    });
    case!("rescale: untrained adapter (lora_B = 0)", |s| {
        edit_values(&s.weights(), B1, |v| v.fill(0.0));
        expect(vec![s.rescale()], &["\"fc1\"", "update s·B·A is zero"])
    });
    case!("rescale: lora_alpha = 0", |s| {
        s.set_config("lora_alpha", Some(0.0.into()));
        expect(vec![s.rescale()], &["\"fc1\"", "scale is zero"])
    });
    case!("rescale: target ratio overflows float32 factors", |s| {
        expect(
            with(vec![s.rescale()], &["--target-ratio", "1e300"]),
            &["\"fc1\"", "non-finite"],
        )
    });
    case!("rescale: target ratio underflows float32 factors", |s| {
        expect(
            with(vec![s.rescale()], &["--target-ratio", "1e-300"]),
            &["\"fc1\"", "strength ratio", "nothing written"],
        )
    });
    case!("rescale: --factor 0 is a usage error", |s| {
        usage(
            with(vec![s.rescale()], &["--factor", "0"]),
            &["--factor", "> 0"],
        )
    });
    case!("rescale: --target-ratio 0 is a usage error", |s| {
        usage(
            with(vec![s.rescale()], &["--target-ratio", "0"]),
            &["--target-ratio", "> 0"],
        )
    });
    case!("rescale: --factor nan, inf, -1", |s| {
        let mut runs = with(vec![s.rescale()], &["--factor", "nan"]);
        runs.extend(with(vec![s.rescale()], &["--factor", "inf"]));
        runs.extend(with(vec![s.rescale()], &["--factor=-1"]));
        usage(runs, &["--factor"])
    });
    case!("rescale: --layers selects nothing", |s| {
        expect(
            with(vec![s.rescale()], &["--layers", "attention"]),
            &["attention", "fc1"],
        )
    });

    // ---- Outputs that alias inputs ---------------------------------------------------
    case!("merge --out is --base", |s| {
        let runs = vec![
            s.merge_with(&s.base(), &s.adapter(), &s.base()),
            with(
                vec![s.merge_with(&s.base(), &s.adapter(), &s.base())],
                &["--force"],
            )
            .remove(0),
        ];
        expect(runs, &["--out", "base checkpoint", "model.safetensors"])
    });
    case!("merge --out is --base spelled differently", |s| {
        let out = s.p("adapter/../model.safetensors");
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), &out)],
            &["base checkpoint"],
        )
    });
    case!("merge --out is the adapter's weights", |s| {
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), &s.weights())],
            &["adapter weights", "adapter"],
        )
    });
    case!(
        "merge --out is a symlink to --base (even with --force)",
        |s| {
            let link = s.p("other/link.safetensors");
            std::os::unix::fs::symlink(s.base(), &link).unwrap();
            let runs = vec![
                s.merge_with(&s.base(), &s.adapter(), &link),
                with(
                    vec![s.merge_with(&s.base(), &s.adapter(), &link)],
                    &["--force"],
                )
                .remove(0),
            ];
            expect(runs, &["base checkpoint"])
        }
    );
    case!("merge --out is a hard link to --base", |s| {
        let link = s.p("other/hard.safetensors");
        std::fs::hard_link(s.base(), &link).unwrap();
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), &link)],
            &["base checkpoint"],
        )
    });
    case!("rescale --out is --adapter", |s| {
        let runs = vec![
            s.rescale_with(&s.base(), &s.adapter(), &s.adapter()),
            with(
                vec![s.rescale_with(&s.base(), &s.adapter(), &s.adapter())],
                &["--force"],
            )
            .remove(0),
            s.rescale_with(&s.base(), &s.adapter(), &s.p("out/../adapter/")),
        ];
        expect(runs, &["--out", "adapter"])
    });
    case!(
        "rescale --out holds a symlink to the adapter's config",
        |s| {
            let out = s.p("other/resc");
            std::fs::create_dir(&out).unwrap();
            std::os::unix::fs::symlink(s.config(), out.join("adapter_config.json")).unwrap();
            expect(
                vec![s.rescale_with(&s.base(), &s.adapter(), &out)],
                &["adapter config"],
            )
        }
    );

    // ---- Outputs that are not regular files ------------------------------------------
    case!("merge --out is a symlink to another file", |s| {
        let link = s.p("out/link.safetensors");
        std::os::unix::fs::symlink(s.p("out/merged.safetensors"), &link).unwrap();
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), &link)],
            &["link.safetensors", "symbolic link", "--force"],
        )
    });
    case!("merge --out is a dangling symlink", |s| {
        let link = s.p("out/dangling.safetensors");
        std::os::unix::fs::symlink(s.p("other/nowhere"), &link).unwrap();
        let runs = vec![
            s.merge_with(&s.base(), &s.adapter(), &link),
            with(
                vec![s.merge_with(&s.base(), &s.adapter(), &link)],
                &["--force"],
            )
            .remove(0),
        ];
        expect(runs, &["dangling.safetensors", "symbolic link"])
    });
    case!("merge --out is a folder", |s| {
        expect(
            vec![
                s.merge_with(&s.base(), &s.adapter(), &s.p("out")),
                with(
                    vec![s.merge_with(&s.base(), &s.adapter(), &s.p("out"))],
                    &["--force"],
                )
                .remove(0),
            ],
            &["out", "a folder"],
        )
    });
    case!("merge --out is /dev/null", |s| {
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), Path::new("/dev/null"))],
            &["/dev/null", "character device", "--force"],
        )
    });
    case!("merge --out is /dev/full, forced", |s| {
        if !Path::new("/dev/full").exists() {
            return expect(vec![], &[]);
        }
        expect(
            with(
                vec![s.merge_with(&s.base(), &s.adapter(), Path::new("/dev/full"))],
                &["--force"],
            ),
            &["/dev/full", "No space left"],
        )
    });
    case!("merge --out in a missing folder", |s| {
        expect(
            vec![s.merge_with(&s.base(), &s.adapter(), &s.p("no/such/dir/m.safetensors"))],
            &["no/such/dir"],
        )
    });
    case!("rescale --out is a file", |s| {
        expect(
            vec![s.rescale_with(&s.base(), &s.adapter(), &s.p("out/merged.safetensors"))],
            &["merged.safetensors", "not a folder"],
        )
    });
    case!("rescale --out holds a symlinked weights file", |s| {
        let out = s.p("out/rescaled");
        std::fs::remove_file(out.join("adapter_model.safetensors")).unwrap();
        std::os::unix::fs::symlink(
            s.p("out/merged.safetensors"),
            out.join("adapter_model.safetensors"),
        )
        .unwrap();
        expect(
            vec![s.rescale()],
            &["adapter_model.safetensors", "symbolic link", "--force"],
        )
    });

    // ---- Usage -----------------------------------------------------------------------
    case!(
        "usage: missing arguments, unknown command, --top-k 0",
        |s| {
            let mut runs = vec![argv(&["merge", "--base", "x"]), argv(&["frobnicate"])];
            runs.extend(with(s.inspect(), &["--top-k", "0"]));
            runs.push(argv(&[
                "rescale",
                "--adapter",
                "a",
                "--base",
                "b",
                "--out",
                "c",
                "--layers",
                "re:((",
            ]));
            usage(runs, &[])
        }
    );
    v
}

/// Everything under a folder: per relative path, the file type and mode, and the bytes of
/// a file or the target of a link.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = m.permissions().mode();
            let t = m.file_type();
            if t.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(
                    rel,
                    (
                        "link".into(),
                        mode,
                        target.as_os_str().as_encoded_bytes().to_vec(),
                    ),
                );
            } else if t.is_dir() {
                out.insert(rel, ("dir".into(), mode, Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, ("file".into(), mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}
