//! `#[derive(LoraModel)]` names every `LoraLinear` exactly as burn's own module visitor
//! does, through nested structs, `Vec`, `Option`, arrays, enums and generics, and for the
//! examples' BERT and LLaMA; `inject_lora` freezes the rest and keeps `modules_to_save`.

use burn::module::Module;
use burn::nn::{Gelu, LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::{Device, Tensor};
use rora::{LayerKind, LoraEmbedding, lora_layer_paths};
use rora::{
    LoraConfig, LoraLinear, LoraModel, ParamSummary, Targets, inject_lora, lora_linear_paths,
};
use rora_examples::models::{BertConfig, LlamaConfig};
use rora_tests::{burn_lora_layer_paths, burn_lora_linear_paths};

fn lin(d: usize, device: &Device) -> LoraLinear {
    LinearConfig::new(d, d).init(device).into()
}

#[derive(Module, LoraModel, Debug)]
struct Attention {
    query: LoraLinear,
    value: Option<LoraLinear>,
    norm: LayerNorm,
    heads: usize,
}

#[derive(Module, LoraModel, Debug)]
struct Mlp {
    up: [LoraLinear; 2],
    act: Gelu,
}

#[derive(Module, LoraModel, Debug)]
enum Mixer {
    Attention(Attention),
    Mlp(Mlp),
}

/// A module the derive is told to leave alone (it does not implement `LoraModel`).
#[derive(Module, Debug)]
struct Opaque {
    inner: LoraLinear,
}

#[derive(Module, LoraModel, Debug)]
struct Model<E: Module> {
    blocks: Vec<Mixer>,
    extra: E,
    head: LoraLinear,
    #[lora(skip)]
    opaque: Opaque,
    #[module(skip)]
    name: String,
    scale: f64,
}

fn model(device: &Device) -> Model<Vec<Option<LoraLinear>>> {
    let d = 4;
    let attention = |value: bool| {
        Mixer::Attention(Attention {
            query: lin(d, device),
            value: value.then(|| lin(d, device)),
            norm: LayerNormConfig::new(d).init(device),
            heads: 2,
        })
    };
    Model {
        blocks: vec![
            attention(true),
            Mixer::Mlp(Mlp {
                up: [lin(d, device), lin(d, device)],
                act: Gelu::new(),
            }),
            attention(false),
        ],
        extra: vec![Some(lin(d, device)), None, Some(lin(d, device))],
        head: lin(d, device),
        opaque: Opaque {
            inner: lin(d, device),
        },
        name: "toy".into(),
        scale: 1.0,
    }
}

#[test]
fn derived_paths_are_burns_module_paths() {
    let device = Device::default();
    let m = model(&device);
    let burn_paths: Vec<String> = burn_lora_linear_paths(&m)
        .into_iter()
        .filter(|p| !p.starts_with("opaque."))
        .collect();
    let derived = lora_linear_paths(m);
    assert_eq!(derived, burn_paths);
    // Spelled out, so a change in either is visible.
    assert_eq!(
        derived,
        [
            "blocks.0.Attention.query",
            "blocks.0.Attention.value",
            "blocks.1.Mlp.up.0",
            "blocks.1.Mlp.up.1",
            "blocks.2.Attention.query",
            "extra.0",
            "extra.2",
            "head",
        ]
    );
}

#[test]
fn derived_paths_are_burns_module_paths_for_bert_and_llama() {
    let device = Device::default();
    let bert = BertConfig::new(50).with_n_layers(2).init(&device);
    let want = burn_lora_linear_paths(&bert);
    assert_eq!(want.len(), 2 * 6 + 2);
    assert!(want.contains(&"layers.1.attention.value".to_string()));
    assert_eq!(lora_linear_paths(bert), want);

    let llama = LlamaConfig::new(50).with_n_layers(2).init(&device);
    let want = burn_lora_linear_paths(&llama);
    assert_eq!(want.len(), 2 * 7 + 1);
    assert!(want.contains(&"layers.0.self_attn.q_proj".to_string()));
    assert_eq!(lora_linear_paths(llama), want);
}

#[test]
fn skipped_fields_are_passed_through_untouched() {
    let device = Device::default();
    let m = model(&device);
    assert!(burn_lora_linear_paths(&m).contains(&"opaque.inner".to_string()));
    let adapted = inject_lora(
        m,
        &Targets::parse(&["re:.*"]).unwrap(),
        &LoraConfig::new(2, 4.0),
    )
    .unwrap();
    assert!(adapted.head.lora.is_some());
    assert!(
        adapted.opaque.inner.lora.is_none(),
        "#[lora(skip)] field adapted"
    );
    assert_eq!(adapted.name, "toy");
}

#[test]
fn inject_freezes_the_base_and_keeps_modules_to_save_trainable() {
    let device = Device::default().autodiff();
    let m = model(&device);
    let targets = Targets::parse(&["query"])
        .unwrap()
        .with_modules_to_save(&["head"])
        .unwrap();
    let adapted = inject_lora(m, &targets, &LoraConfig::new(2, 4.0)).unwrap();
    // Two adapted queries (r·(in + out) = 2·8 each) and the head's weight and bias.
    assert_eq!(ParamSummary::of(&adapted).trainable, 2 * 16 + (16 + 4));
    assert!(adapted.head.weight.is_require_grad());
    let Mixer::Attention(a) = &adapted.blocks[0] else {
        panic!("block 0 is attention")
    };
    assert!(!a.query.weight.is_require_grad());
    assert!(!a.norm.gamma.is_require_grad());

    // Gradients reach exactly the trainable parameters.
    let x = Tensor::<2>::ones([3, 4], &device);
    let y = adapted.head.forward(a.query.forward(x));
    let grads = y.sum().backward();
    assert!(adapted.head.weight.grad(&grads).is_some());
    assert!(a.query.lora.as_ref().unwrap().a.grad(&grads).is_some());
    assert!(a.query.weight.grad(&grads).is_none());
}

#[test]
fn a_modules_to_save_pattern_that_matches_nothing_is_an_error() {
    let device = Device::default();
    let targets = Targets::parse(&["query"])
        .unwrap()
        .with_modules_to_save(&["classifier"])
        .unwrap();
    let err = inject_lora(model(&device), &targets, &LoraConfig::new(2, 4.0)).unwrap_err();
    assert!(matches!(
        err,
        rora::InjectError::Target(rora::TargetError::Unmatched { ref pattern, .. })
            if pattern == "classifier"
    ));
}

#[derive(Module, LoraModel, Debug)]
enum Input {
    Tokens(LoraEmbedding),
    Dense(LoraLinear),
}

#[derive(Module, LoraModel, Debug)]
struct WithEmbeddings<E: Module> {
    inputs: Vec<Input>,
    positions: Option<LoraEmbedding>,
    tables: [LoraEmbedding; 2],
    body: Model<E>,
}

#[test]
fn derived_layer_paths_with_embeddings_are_burns_module_paths() {
    use burn::nn::EmbeddingConfig;
    let device = Device::default();
    let emb = |n: usize| LoraEmbedding::from(EmbeddingConfig::new(n, 4).init(&device));
    let m = WithEmbeddings {
        inputs: vec![Input::Tokens(emb(10)), Input::Dense(lin(4, &device))],
        positions: Some(emb(6)),
        tables: [emb(3), emb(5)],
        body: model(&device),
    };
    let burn_paths: Vec<(String, LayerKind)> = burn_lora_layer_paths(&m)
        .into_iter()
        .filter(|(p, _)| !p.contains("opaque."))
        .map(|(p, ty)| {
            let kind = match ty.as_str() {
                "Struct:LoraEmbedding" => LayerKind::Embedding,
                _ => LayerKind::Linear,
            };
            (p, kind)
        })
        .collect();
    let derived = lora_layer_paths(m);
    assert_eq!(derived, burn_paths);
    let embeddings: Vec<&str> = derived
        .iter()
        .filter(|(_, k)| *k == LayerKind::Embedding)
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        embeddings,
        ["inputs.0.Tokens", "positions", "tables.0", "tables.1"]
    );
    // The linear layers are those `lora_linear_paths` sees, in the same order.
    let linears: Vec<String> = derived
        .iter()
        .filter(|(_, k)| *k == LayerKind::Linear)
        .map(|(p, _)| p.clone())
        .collect();
    let m = WithEmbeddings {
        inputs: vec![Input::Tokens(emb(10)), Input::Dense(lin(4, &device))],
        positions: Some(emb(6)),
        tables: [emb(3), emb(5)],
        body: model(&device),
    };
    assert_eq!(lora_linear_paths(m), linears);
    assert_eq!(linears[0], "inputs.1.Dense");
    assert!(linears.contains(&"body.blocks.1.Mlp.up.1".to_string()));
}

#[test]
fn inject_targets_embeddings_too() {
    use burn::nn::EmbeddingConfig;
    let device = Device::default().autodiff();
    let m = WithEmbeddings {
        inputs: vec![Input::Tokens(LoraEmbedding::from(
            EmbeddingConfig::new(10, 4).init(&device),
        ))],
        positions: None,
        tables: [
            LoraEmbedding::from(EmbeddingConfig::new(3, 4).init(&device)),
            LoraEmbedding::from(EmbeddingConfig::new(5, 4).init(&device)),
        ],
        body: model(&device),
    };
    let targets = Targets::parse(&["Tokens", "tables.1", "head"]).unwrap();
    let adapted = inject_lora(m, &targets, &LoraConfig::new(2, 4.0)).unwrap();
    let Input::Tokens(t) = &adapted.inputs[0] else {
        panic!("tokens")
    };
    assert_eq!(t.rank(), Some(2));
    assert!(!t.weight.is_require_grad(), "the table is frozen");
    assert!(adapted.tables[0].lora.is_none() && adapted.tables[1].lora.is_some());
    // A (2·10) and B (4·2) of the token table, A (2·5) and B (4·2) of table 1, and the head.
    assert_eq!(
        ParamSummary::of(&adapted).trainable,
        (2 * 10 + 4 * 2) + (2 * 5 + 4 * 2) + 2 * (4 + 4)
    );
}
