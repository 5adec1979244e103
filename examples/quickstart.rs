//! Add LoRA and RoRA to a small burn model of your own.
//! Run: `cargo run --release -p rora-examples --bin quickstart`
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use rora::{LoraConfig, LoraLinear, LoraModel, ParamSummary, Rora, RoraConfig, Targets};

// 1. Use `LoraLinear` where you would use burn's `Linear`, and derive `LoraModel`.
#[derive(Module, LoraModel, Debug)]
struct Mlp {
    fc1: LoraLinear,
    fc2: LoraLinear,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let pretrained = Mlp {
        fc1: LinearConfig::new(32, 64).init(&device).into(),
        fc2: LinearConfig::new(64, 2).init(&device).into(),
    };
    // 2. One call: freeze the model, attach adapters to fc1 (with RoRA's base-branch
    //    dropout, Cl) and keep the head fc2 trainable.
    let targets = Targets::parse(&["fc1"])?.with_modules_to_save(&["fc2"])?;
    let lora = LoraConfig::new(4, 8.0).with_base_dropout(0.1);
    let mut model = rora::inject_lora(pretrained, &targets, &lora)?;
    println!("{}", ParamSummary::of(&model));
    // 3. Prepare RoRA once: caches W0's top-k subspaces for the constraint (Tr).
    let rora = Rora::prepare(&model, RoraConfig::new().with_top_k(8))?;
    let mut optim = AdamWConfig::new().init();
    for step in 0..50 {
        let x = Tensor::<2>::random([16, 32], Distribution::Normal(0.0, 1.0), &device);
        let target = x.clone().narrow(1, 0, 2); // a toy regression task
        let loss = (model.fc2.forward(model.fc1.forward(x).tanh()) - target)
            .powf_scalar(2.0)
            .mean()
            + rora.penalty(&model);
        if step % 10 == 0 {
            println!("step {step}: loss {:.4}", loss.clone().into_scalar::<f32>());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    // 4. After training: spectral rescaling (Pt) of every adapted layer, the report, and a
    //    PEFT adapter on disk.
    let (model, report) = rora.rescale(model)?;
    println!(
        "{report}{}",
        rora::spectral::render_table(&rora.report(&model)?)
    );
    rora::save_adapter(
        &model,
        std::path::Path::new("quickstart-adapter"),
        &Default::default(),
    )?;
    println!("wrote quickstart-adapter/ (adapter_config.json, adapter_model.safetensors)");
    Ok(())
}
