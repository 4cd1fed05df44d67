use colloquy_nlu::{Classifier, TrainConfig};
use std::time::Instant;
fn envf(k: &str, d: f32) -> f32 { std::env::var(k).ok().map(|v| v.parse().unwrap()).unwrap_or(d) }
fn main() {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/work/shared/data/clinc150/data_full.json").unwrap()).unwrap();
    let split = |key: &str| -> Vec<(String, String)> { json[key].as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())).collect() };
    let mut cfg = TrainConfig::default();
    cfg.epochs = envf("EPOCHS", cfg.epochs as f32) as usize;
    cfg.learning_rate = envf("LR", cfg.learning_rate);
    cfg.l2 = envf("L2", cfg.l2);
    cfg.temperature = envf("TEMP", cfg.temperature);
    cfg.background_logit = envf("BG", cfg.background_logit);
    let t = Instant::now();
    let m = Classifier::train(&split("train"), &cfg).unwrap();
    eprintln!("train {:.2}s", t.elapsed().as_secs_f64());
    for (ins, oos) in [("val", "oos_val"), ("test", "oos_test")] {
        let a: Vec<(bool, f32)> = split(ins).iter().map(|(x, y)| { let (p, c) = m.predict_top(x); (p == y, c) }).collect();
        let o: Vec<f32> = split(oos).iter().map(|(x, _)| m.predict_top(x).1).collect();
        let acc0 = a.iter().filter(|p| p.0).count() as f32 / a.len() as f32;
        // auroc: P(conf in-scope > conf oos)
        let mut wins = 0.0f64;
        for &(_, c) in &a { for &d in &o { if c > d { wins += 1.0 } else if c == d { wins += 0.5 } } }
        let auroc = wins / (a.len() * o.len()) as f64;
        let mut line = format!("{ins}: acc0 {:.2} auroc {:.4} |", 100.0 * acc0, auroc);
        for target in [0.93f32, 0.92, 0.91, 0.90, 0.88] {
            // largest threshold with acc >= target
            let mut cs: Vec<f32> = a.iter().map(|p| p.1).collect(); cs.sort_by(f32::total_cmp);
            let mut best = None;
            for &t in &cs { let acc = a.iter().filter(|p| p.0 && p.1 >= t).count() as f32 / a.len() as f32; if acc >= target { best = Some(t) } else { break } }
            if let Some(t) = best { let rec = o.iter().filter(|&&c| c < t).count() as f32 / o.len() as f32; line += &format!(" acc{:.0}: t={:.3} rec={:.1}", target*100.0, t, rec*100.0); }
        }
        println!("{line}");
    }
}
