//! Property tests of the readers against mutated input: whatever the bytes of the
//! safetensors file or the JSON of the config, reading never panics, fails with a typed
//! [`AdapterError`] whose message is not empty, and what it accepts satisfies the reader's
//! own guarantees (a non-empty adapter of finite factors with consistent shapes).

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use rora_peft::{
    AdapterError, CONFIG_FILE, HostMatrix, LayerFactors, PeftAdapter, PeftLoraConfig, TensorFile,
    WEIGHTS_FILE,
};
use serde_json::Value;

/// A valid two-layer adapter.
fn adapter() -> PeftAdapter {
    let mut layers = BTreeMap::new();
    for (i, (out, inp)) in [(6usize, 5usize), (3, 6)].into_iter().enumerate() {
        layers.insert(
            format!("layers.{i}.proj"),
            LayerFactors::new(
                HostMatrix::new(2, inp, (0..2 * inp).map(|v| v as f32 * 0.1).collect()),
                HostMatrix::new(out, 2, (0..out * 2).map(|v| v as f32 * -0.2).collect()),
            ),
        );
    }
    PeftAdapter {
        config: PeftLoraConfig::new(2, 4.0, vec!["proj".into()]),
        layers,
    }
}

/// The bytes of the valid adapter's two files.
fn valid_files() -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    adapter().write(dir.path()).unwrap();
    (
        std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap(),
        std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap(),
    )
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    HeaderLength(u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => prop_oneof![any::<u64>(), 0u64..2000].prop_map(Edit::HeaderLength),
    ]
}

/// Apply edits; positions are taken modulo the length, biased to the header (where the
/// structure is) by `header_bias`.
fn apply(mut bytes: Vec<u8>, edits: &[Edit], header_len: usize) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        // Half of the positions fall in the first 8 + header bytes.
        let pos = |i: usize| {
            if i.is_multiple_of(2) {
                (i / 2) % (header_len + 8).min(len)
            } else {
                (i / 2) % len
            }
        };
        match e {
            Edit::Set(i, b) => {
                if !bytes.is_empty() {
                    let p = pos(*i);
                    bytes[p] = *b;
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            Edit::Insert(i, b) => {
                let p = pos(*i).min(bytes.len());
                bytes.splice(p..p, b.iter().copied());
            }
            Edit::Remove(i, n) => {
                if !bytes.is_empty() {
                    let p = pos(*i);
                    let end = (p + n).min(bytes.len());
                    bytes.drain(p..end);
                }
            }
            Edit::HeaderLength(n) => {
                if bytes.len() >= 8 {
                    bytes[..8].copy_from_slice(&n.to_le_bytes());
                }
            }
        }
    }
    bytes
}

/// Read `dir` every way a caller can; panics (the property's failure) only on a broken
/// guarantee.
fn read_all_ways(dir: &Path) {
    match PeftAdapter::read(dir) {
        Ok(a) => {
            assert!(!a.layers.is_empty());
            for (path, f) in &a.layers {
                assert!(f.a.is_finite() && f.b.is_finite(), "{path}");
                assert_eq!(f.a.rows, f.b.cols, "{path}");
                assert_eq!(f.a.rows, a.config.rank_alpha_for(path).0, "{path}");
                assert!(f.a.cols > 0 && f.b.rows > 0, "{path}");
            }
        }
        Err(e) => check_error(&e),
    }
    match TensorFile::open(&dir.join(WEIGHTS_FILE)) {
        Ok(file) => {
            for name in file.names().to_vec() {
                if let Err(e) = file.info(&name) {
                    check_error(&e);
                }
                if let Err(e) = file.tensor(&name) {
                    check_error(&e);
                }
                match file.matrix(&name) {
                    Ok(m) => assert_eq!(m.data.len(), m.rows * m.cols),
                    Err(e) => check_error(&e),
                }
            }
        }
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &AdapterError) {
    let m = e.to_string();
    assert!(!m.trim().is_empty(), "{e:?}");
}

/// Any JSON value, small.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![Just(1e308), Just(-0.0), Just(0.0), Just(f64::MIN_POSITIVE)]
            .prop_map(Value::from),
        "[a-z_.*()|\\\\0-9-]{0,12}".prop_map(Value::String),
        Just(Value::String("LORA".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_.0-9]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: [&str; 11] = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "use_dora",
    "fan_in_fan_out",
    "bias",
    "lora_dropout",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn mutated_weights_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        let (weights, config) = valid_files();
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), apply(weights, &edits, header_len)).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), config).unwrap();
        read_all_ways(dir.path());
    }

    #[test]
    fn arbitrary_headers_never_panic(
        entries in proptest::collection::vec((
            prop_oneof![Just("base_model.model.layers.0.proj.lora_A.weight".to_string()),
                        Just("base_model.model.layers.0.proj.lora_B.weight".to_string()),
                        "[a-z._]{1,12}"],
            prop_oneof![Just("F32"), Just("F16"), Just("BF16"), Just("F64"), Just("I64"),
                        Just("BOOL"), Just("F4"), Just("F8_E4M3"), Just("X")],
            proptest::collection::vec(prop_oneof![0usize..8, Just(usize::MAX), Just(1 << 33)], 0..4),
            (0usize..300, 0usize..300),
        ), 0..5),
        data_len in 0usize..400,
        fill in any::<u8>(),
    ) {
        let mut header = serde_json::Map::new();
        for (name, dtype, shape, (b, e)) in &entries {
            header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [b, e]}));
        }
        let text = Value::Object(header).to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend(std::iter::repeat_n(fill, data_len));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), bytes).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), valid_files().1).unwrap();
        read_all_ways(dir.path());
    }

    #[test]
    fn mutated_configs_never_panic_and_round_trip(
        changes in proptest::collection::vec((0..KEYS.len(), proptest::option::of(json())), 1..4),
        extra in proptest::collection::btree_map("[a-z_]{1,10}", json(), 0..3),
    ) {
        let (weights, config) = valid_files();
        let mut value: serde_json::Map<String, Value> = serde_json::from_str(&config).unwrap();
        for (k, v) in changes {
            match v {
                Some(v) => { value.insert(KEYS[k].into(), v); }
                None => { value.remove(KEYS[k]); }
            }
        }
        for (k, v) in extra {
            value.insert(k, v);
        }
        let text = Value::Object(value).to_string();
        match PeftLoraConfig::from_json(&text, Path::new("adapter_config.json")) {
            Ok(c) => {
                prop_assert!(c.r >= 1 && c.lora_alpha.is_finite());
                // What was accepted is written back and read again unchanged.
                let again = PeftLoraConfig::from_json(&c.to_json(), Path::new("x.json")).unwrap();
                prop_assert_eq!(again, c);
            }
            Err(e) => check_error(&e),
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WEIGHTS_FILE), weights).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        read_all_ways(dir.path());
    }

    #[test]
    fn arbitrary_config_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = PeftLoraConfig::from_json(&text, Path::new("x.json")) {
            check_error(&e);
        }
    }
}
