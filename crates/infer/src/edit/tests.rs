//! The fact editor on the tiny demo Llama: its pass equals the model's own, its gradient a
//! finite difference, and its edit raises the target.

use super::*;
use crate::tests::{runnable, tiny_llama};
use crate::Edited;
use candle_core::{DType, Device, Tensor, Var};

const GOAL_PROMPT: &str = "the cat sat on the";

fn goal(target: &str) -> FactGoal {
    FactGoal {
        subject: "cat".into(),
        prompt: GOAL_PROMPT.into(),
        target: target.into(),
    }
}

#[test]
fn the_optimisation_pass_is_the_model_s_own_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
    let w = r.weights(&model, Edited::default());
    let target = "#7";
    // Two prompts of different lengths, the subject at different places: the batched
    // attention pads them and must hide the padding.
    let contexts = ["{}".to_string(), "A dog ran far. {}".to_string()];
    for layer in [0, 1] {
        let p = r.problem(&w, &goal(target), layer, &contexts).unwrap();
        let zero = Tensor::zeros(p.model.arch.hidden, DType::F32, &Device::Cpu).unwrap();
        let (_, _, p_target) = p.run(&zero).unwrap();
        let want = contexts
            .iter()
            .map(|c| {
                let prompt = c.replace("{}", GOAL_PROMPT);
                let d = r.distribution(&w, &r.encode(&prompt).unwrap()).unwrap();
                d.prob(7)
            })
            .sum::<f64>()
            / 2.0;
        assert!(
            (p_target - want).abs() < 1e-5 * want.max(1e-3),
            "layer {layer}: {p_target} vs {want}"
        );
    }
}

#[test]
fn the_gradient_matches_a_finite_difference() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
    let w = r.weights(&model, Edited::default());
    let contexts = vec!["{}".to_string(), "A dog ran. {}".to_string()];
    let p = r.problem(&w, &goal("#11"), 0, &contexts).unwrap();
    assert_gradient_is_a_finite_difference(&p, "llama");
}

/// The loss's gradient in `δ` (autograd through the differentiable pass), along one
/// direction, against a central finite difference; and finite where the optimisation starts.
pub(crate) fn assert_gradient_is_a_finite_difference(p: &problem::Problem, what: &str) {
    let opts = FactOptions::at_layer(0);
    let hidden = p.model.arch.hidden;
    let at: Vec<f32> = (0..hidden)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05)
        .collect();
    let dir_v: Vec<f32> = (0..hidden)
        .map(|i| ((i * 3 % 5) as f32 - 2.0) * 0.5)
        .collect();
    let var = Var::from_vec(at.clone(), hidden, &Device::Cpu).unwrap();
    let zero = Tensor::zeros(hidden, DType::F32, &Device::Cpu).unwrap();
    let kl_init = Some(p.run(&zero).unwrap().1);
    let (loss, _) = p
        .loss(var.as_tensor(), &opts, &mut kl_init.clone())
        .unwrap();
    let g = loss
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .expect("the loss reaches delta")
        .to_vec1::<f32>()
        .unwrap();
    let along: f64 = g
        .iter()
        .zip(&dir_v)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let eps = 1e-2f32;
    let at_step = |sign: f32| -> f64 {
        let moved: Vec<f32> = at
            .iter()
            .zip(&dir_v)
            .map(|(a, d)| a + sign * eps * d)
            .collect();
        let t = Tensor::from_vec(moved, hidden, &Device::Cpu).unwrap();
        p.loss(&t, &opts, &mut kl_init.clone()).unwrap().1.loss
    };
    let numeric = (at_step(1.0) - at_step(-1.0)) / (2.0 * eps as f64);
    assert!(along.abs() > 1e-4, "{what}: a gradient to compare: {along}");
    // Where the optimisation starts, δ = 0, the gradient is finite.
    let zero = Var::zeros(hidden, DType::F32, &Device::Cpu).unwrap();
    let (loss0, _) = p
        .loss(zero.as_tensor(), &opts, &mut kl_init.clone())
        .unwrap();
    let g0 = loss0
        .backward()
        .unwrap()
        .get(zero.as_tensor())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        g0.iter().all(|v| v.is_finite()) && g0.iter().any(|v| *v != 0.0),
        "{what}"
    );
    assert!(
        (along - numeric).abs() < 0.02 * along.abs().max(numeric.abs()),
        "{what}: autograd {along} vs finite difference {numeric}"
    );
}

#[test]
fn the_gradient_taken_a_chunk_at_a_time_is_the_whole_graph_s() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
    let w = r.weights(&model, Edited::default());
    let contexts = vec![
        "{}".to_string(),
        "A dog ran. {}".to_string(),
        "The end. {}".to_string(),
    ];
    let mut p = r.problem(&w, &goal("#11"), 0, &contexts).unwrap();
    let opts = FactOptions::at_layer(0);
    let hidden = p.model.arch.hidden;
    let at: Vec<f32> = (0..hidden)
        .map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.1)
        .collect();
    let var = Var::from_vec(at, hidden, &Device::Cpu).unwrap();
    let zero = Tensor::zeros(hidden, DType::F32, &Device::Cpu).unwrap();
    let kl_init = Some(p.run(&zero).unwrap().1);
    let (loss, whole) = p
        .loss(var.as_tensor(), &opts, &mut kl_init.clone())
        .unwrap();
    let want = loss
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // One sequence a chunk: every sequence, the KL prompt's included, in a graph of its own.
    p.rechunk(1).unwrap();
    assert_eq!(p.chunks.len(), contexts.len() + 1);
    let (step, grad) = p
        .loss_and_gradient(var.as_tensor(), &opts, &mut kl_init.clone(), true)
        .unwrap();
    let got = grad.to_vec1::<f32>().unwrap();
    // The last step's loss, taken without a graph, is the same loss.
    let (alone, _) = p
        .loss_and_gradient(var.as_tensor(), &opts, &mut kl_init.clone(), false)
        .unwrap();
    assert_eq!(alone.loss, step.loss);
    assert!(
        (step.loss - whole.loss).abs() < 1e-5 * whole.loss.abs().max(1.0),
        "{} vs {}",
        step.loss,
        whole.loss
    );
    assert!((step.p_target - whole.p_target).abs() < 1e-6);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(scale > 0.0);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4 * scale, "{g} vs {w}");
    }
}

#[test]
fn the_knobs_are_checked_and_the_clamp_bounds_the_change() {
    let layers = 2;
    let defaults = FactOptions::tuned(layers, &FactKnobs::default()).unwrap();
    assert_eq!(defaults.layer, default_layer(layers));
    // The study's choice on the models the README names: SmolLM2, Gemma 3 270M, Qwen2.5-0.5B.
    assert_eq!(
        [default_layer(30), default_layer(18), default_layer(24)],
        [4, 3, 3]
    );
    let bad = [
        FactKnobs {
            layer: Some(layers),
            ..Default::default()
        },
        FactKnobs {
            clamp: Some(0.0),
            ..Default::default()
        },
        FactKnobs {
            clamp: Some(f64::NAN),
            ..Default::default()
        },
        FactKnobs {
            kl_weight: Some(-1.0),
            ..Default::default()
        },
    ];
    for knobs in bad {
        let e = FactOptions::tuned(layers, &knobs).unwrap_err().to_string();
        assert!(
            e.contains("layer") || e.contains("clamp") || e.contains("KL weight"),
            "{e}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), None);
    let r = runnable(&model);
    let w = r.weights(&model, Edited::default());
    let contexts = vec!["{}".to_string(), "A dog ran. {}".to_string()];
    let p = r.problem(&w, &goal("#11"), 0, &contexts).unwrap();
    let m = norm(&p.m_init);
    let size = |clamp: f64| {
        let knobs = FactKnobs {
            layer: Some(0),
            clamp: Some(clamp),
            kl_weight: None,
        };
        let opts = FactOptions {
            steps: 6,
            ..FactOptions::tuned(layers, &knobs).unwrap()
        };
        let (delta, _) = p.optimise(&opts, &mut |_| {}).unwrap();
        norm(&delta) / m
    };
    let (tight, loose) = (size(0.05), size(4.0));
    assert!(tight <= 0.05 * (1.0 + 1e-5), "{tight}");
    assert!(
        loose > tight * 2.0,
        "the clamp is what held it: {loose} vs {tight}"
    );
}
