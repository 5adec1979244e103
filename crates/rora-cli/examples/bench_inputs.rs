//! Writes large synthetic inputs for timing `rora inspect / merge / rescale` (see the
//! "Performance" section of this crate's README).
//!
//! ```sh
//! cargo run --release -p rora-cli --example bench_inputs -- square /tmp/rora-bench/square
//! cargo run --release -p rora-cli --example bench_inputs -- llama /tmp/rora-bench/llama --blocks 2
//! ```
//!
//! * `square`: a base of `--layers` (default 2) `N×N` weights (`--n`, default 4096),
//!   `layers.<i>.proj.weight`, and a rank-`--rank` (default 16) adapter on all of them.
//! * `llama`: `--blocks` (default 2) LLaMA-7B-shaped blocks: `q_proj`, `k_proj`, `v_proj`,
//!   `o_proj` `4096×4096`, `gate_proj`, `up_proj` `11008×4096`, `down_proj` `4096×11008`,
//!   plus the two RMSNorm weights per block, and a rank-16 adapter on the seven projections.
//!
//! Options: `--dtype f32|f16|bf16` (base dtype, default f32), `--seed S`. The base weights
//! are i.i.d. Gaussian with standard deviation `1/sqrt(in)` — a flat top of the spectrum,
//! the hardest case for computing `σ1(W0)` iteratively. The adapter's `A` is Gaussian
//! (`1/sqrt(in)`), `B` Gaussian with standard deviation `0.01`, `lora_alpha = 2·r`.
//!
//! The base file is streamed to disk tensor by tensor, so a base much larger than memory
//! (the whole 32-block 7B stack in f16 is 13 GB) can be written.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rora_peft::{HostMatrix, LayerFactors, PeftAdapter, PeftLoraConfig};

/// SplitMix64 + Box–Muller: deterministic Gaussian numbers without extra dependencies.
struct Gaussian {
    state: u64,
    spare: Option<f64>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Gaussian {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            spare: None,
        }
    }
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = std::f64::consts::TAU * v;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
    fn fill(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.sample() * std) as f32).collect()
    }
}

#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
        }
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
    fn encode(self, v: &[f32], out: &mut Vec<u8>) {
        out.clear();
        for &x in v {
            match self {
                Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
                Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                Dtype::Bf16 => out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
            }
        }
    }
}

/// One base tensor: name, shape, standard deviation of its entries (`None`: all ones).
struct Spec {
    name: String,
    shape: Vec<usize>,
    std: Option<f64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_inputs square|llama OUT_DIR [--n N] [--layers L] [--blocks B] \
         [--rank R] [--dtype f32|f16|bf16] [--seed S]"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        usage();
    }
    let kind = args[0].clone();
    let out = PathBuf::from(&args[1]);
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let Some(name) = flag.strip_prefix("--") else {
            usage()
        };
        let Some(value) = rest.next() else { usage() };
        opts.insert(name.to_string(), value.clone());
    }
    let num = |k: &str, default: usize| -> usize {
        opts.get(k)
            .map(|v| v.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(default)
    };
    let rank = num("rank", 16);
    let seed = num("seed", 1) as u64;
    let dtype = match opts.get("dtype").map(String::as_str) {
        None | Some("f32") => Dtype::F32,
        Some("f16") => Dtype::F16,
        Some("bf16") => Dtype::Bf16,
        Some(_) => usage(),
    };
    // (module path, out, in) of every adapted layer, plus unadapted tensors.
    let mut adapted: Vec<(String, usize, usize)> = Vec::new();
    let mut specs: Vec<Spec> = Vec::new();
    match kind.as_str() {
        "square" => {
            let n = num("n", 4096);
            for i in 0..num("layers", 2) {
                adapted.push((format!("layers.{i}.proj"), n, n));
            }
        }
        "llama" => {
            let (d, ff) = (4096, 11008);
            for b in 0..num("blocks", 2) {
                let p = format!("model.layers.{b}");
                for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                    adapted.push((format!("{p}.self_attn.{m}"), d, d));
                }
                adapted.push((format!("{p}.mlp.gate_proj"), ff, d));
                adapted.push((format!("{p}.mlp.up_proj"), ff, d));
                adapted.push((format!("{p}.mlp.down_proj"), d, ff));
                for norm in ["input_layernorm", "post_attention_layernorm"] {
                    specs.push(Spec {
                        name: format!("{p}.{norm}.weight"),
                        shape: vec![d],
                        std: None,
                    });
                }
            }
        }
        _ => usage(),
    }
    for (path, o, i) in &adapted {
        specs.push(Spec {
            name: format!("{path}.weight"),
            shape: vec![*o, *i],
            std: Some(1.0 / (*i as f64).sqrt()),
        });
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    std::fs::create_dir_all(&out)?;
    let base = out.join("model.safetensors");
    write_base(&base, &specs, dtype, seed)?;

    let mut rng = Gaussian::new(seed.wrapping_add(1000));
    let targets: Vec<String> = if kind == "square" {
        vec!["proj".into()]
    } else {
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut adapter = PeftAdapter {
        config: PeftLoraConfig::new(rank, 2.0 * rank as f64, targets),
        layers: BTreeMap::new(),
    };
    for (path, o, i) in &adapted {
        let a = HostMatrix::new(rank, *i, rng.fill(rank * i, 1.0 / (*i as f64).sqrt()));
        let b = HostMatrix::new(*o, rank, rng.fill(o * rank, 0.01));
        adapter.layers.insert(path.clone(), LayerFactors::new(a, b));
    }
    adapter.write(&out.join("adapter"))?;
    println!(
        "wrote {} ({} tensors, {}) and {}",
        base.display(),
        specs.len(),
        dtype.name(),
        out.join("adapter").display()
    );
    Ok(())
}

/// Stream a safetensors file: header first, then each tensor's bytes as it is generated.
fn write_base(
    path: &Path,
    specs: &[Spec],
    dtype: Dtype,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for s in specs {
        let bytes = s.shape.iter().product::<usize>() * dtype.size();
        header.insert(
            s.name.clone(),
            serde_json::json!({
                "dtype": dtype.name(),
                "shape": s.shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut w = BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(text.as_bytes())?;
    let mut buf = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let n: usize = s.shape.iter().product();
        let values = match s.std {
            Some(std) => Gaussian::new(seed.wrapping_mul(7919).wrapping_add(i as u64)).fill(n, std),
            None => vec![1.0; n],
        };
        dtype.encode(&values, &mut buf);
        w.write_all(&buf)?;
    }
    w.flush()?;
    Ok(())
}
