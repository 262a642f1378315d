//! The project's throughput benchmark (`cargo bench --bench engine -- [options]`).
//!
//! Workload: the sentences of the five articles in ../shared/articles (≥ 3 words, first 128
//! word pieces), as the base-line note measured them, repeated by rounds. It reports, in one
//! run:
//! - encoder-only sequences/s at batch 1, 8, 32, 128 (batches in file order) for the fast
//!   packed encoder in each precision (fp32, bf16, int8) and the candle-op reference encoder,
//!   and the share of the fp32 GEMM peak achieved (encoder FLOPs counted per sequence length /
//!   time / this machine's measured fp32 GEMM rate);
//! - the end-to-end engine (splitting, actor matching, tokenising, encoder, heads,
//!   aggregation) over the articles in each precision, in sentences/s, and p50/p99 latency of
//!   one article;
//! - peak RSS of this process;
//! - with `--peers`: PyTorch and ONNX Runtime (bench/peers) on the identical sentences file,
//!   between two rounds of ours, and the ratios ours/theirs.
//!
//! - with `--server`: the real `stance serve` binary: start-up time to SERVING, throughput with
//!   `--clients N` (default 4) concurrent gRPC clients, and the server's peak RSS under load.
//!
//! Options: `--rounds N` (default 3), `--batches 1,8,32,128`, `--precisions fp32,bf16,int8`,
//! `--peers`, `--peer-engines torch,ort-fp32,ort-int8` (which peers run), `--reference` (also
//! time the candle-op encoder; it runs in the same process and slows what follows it),
//! `--model DIR`, `--articles DIR`, `--json FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use stance::batches::{Batch, WindowInput};
use stance::encoder::{Encoder, FastEncoder, Ops, Precision};
use stance::input::{ArticleInput, Limits};
use stance::mentions::lexicon::Lexicon;
use stance::model::{self, EncoderChoice, ModelFiles, StanceModel};
use stance::pipeline::Engine;
use stance::sentences;
use stance::tokens::SentenceTokenizer;

struct Opts {
    rounds: usize,
    batches: Vec<usize>,
    precisions: Vec<Precision>,
    peers: bool,
    /// bench/peers' `--engines` (all of them unless given).
    peer_engines: Option<String>,
    reference: bool,
    server: bool,
    clients: usize,
    model: PathBuf,
    articles: PathBuf,
    json: Option<PathBuf>,
}

fn opts() -> Opts {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        rounds: 3,
        batches: vec![1, 8, 32, 128],
        precisions: Precision::ALL.to_vec(),
        peers: false,
        peer_engines: None,
        reference: false,
        server: false,
        clients: 4,
        model: root.join(stance::DEFAULT_MODEL_DIR),
        articles: root.join("../shared/articles"),
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => o.rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--batches" => {
                o.batches =
                    args.next().expect("--batches 1,8").split(',').map(|b| b.parse().expect("batch size")).collect()
            }
            "--precisions" => {
                o.precisions = args
                    .next()
                    .expect("--precisions fp32,int8")
                    .split(',')
                    .map(|p| p.parse().unwrap_or_else(|e| panic!("{e}")))
                    .collect()
            }
            "--peers" => o.peers = true,
            "--peer-engines" => o.peer_engines = Some(args.next().expect("--peer-engines ort-fp32,ort-int8")),
            "--reference" => o.reference = true,
            "--server" => o.server = true,
            "--clients" => o.clients = args.next().and_then(|v| v.parse().ok()).expect("--clients N"),
            "--model" => o.model = args.next().expect("--model DIR").into(),
            "--articles" => o.articles = args.next().expect("--articles DIR").into(),
            "--json" => o.json = Some(args.next().expect("--json FILE").into()),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Encoder matmul FLOPs for one sequence of `l` tokens (the dense layers plus QKᵀ and PV).
fn flops(l: usize, h: usize, inter: usize, layers: usize) -> f64 {
    let (l, h, i) = (l as f64, h as f64, inter as f64);
    layers as f64 * (2.0 * l * (4.0 * h * h + 2.0 * h * i) + 4.0 * l * l * h)
}

/// This machine's best fp32 GEMM rate on the encoder's largest shape and threads: the better
/// of the `gemm` crate (candle's kernels) and the encoder's AVX-512 kernel.
fn gemm_peak() -> (f64, f64) {
    let (crate_rate, m, k, n) = (gemm_crate_rate(), 2048, 384, 1536);
    let a = vec![0.5f32; m * k];
    let w = vec![0.25f32; n * k];
    let Some(packed) = stance::encoder::sgemm::PackedWeight::new(&w, n, k) else {
        return (crate_rate, f64::NAN);
    };
    let mut c = vec![0f32; m * n];
    stance::encoder::sgemm::gemm_acc(&mut c, &a, m, &packed);
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        stance::encoder::sgemm::gemm_acc(&mut c, &a, m, &packed);
    }
    (crate_rate, 2.0 * (m * n * k) as f64 * reps as f64 / t.elapsed().as_secs_f64())
}

/// The dense layer's rate in `precision` on this process's paths, `m` rows of an `[n, k]`
/// weight (multiply-adds counted as two operations, whatever the number format).
fn dense_rate(precision: Precision, m: usize, k: usize, n: usize) -> f64 {
    let paths = stance::encoder::cpu::paths().unwrap();
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
    let dense = stance::encoder::dense::Dense::new(w, n, k, precision, paths);
    let mut c = vec![0f32; m * n];
    dense.acc(&mut c, &a, m);
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        dense.acc(&mut c, &a, m);
    }
    2.0 * (m * n * k) as f64 * reps as f64 / t.elapsed().as_secs_f64()
}

fn gemm_crate_rate() -> f64 {
    let (m, k, n) = (2048, 384, 1536);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; n * k];
    let mut c = vec![0f32; m * n];
    let threads = rayon::current_num_threads();
    // SAFETY: c is m×n (row stride n), a is m×k (row stride k) and b, read as the k×n matrix
    // bᵀ, has row stride 1 and column stride k: every access is inside the three vectors.
    let run = |c: &mut Vec<f32>| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    };
    run(&mut c);
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        run(&mut c);
    }
    2.0 * (m * n * k) as f64 * reps as f64 / t.elapsed().as_secs_f64()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let o = opts();
    let files = ModelFiles::from_dir(&o.model).expect("model folder");
    let mut article_paths: Vec<PathBuf> = match std::fs::read_dir(&o.articles) {
        Ok(d) => d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "txt")).collect(),
        Err(e) => {
            eprintln!(
                "cannot read {}: {e}; the benchmark's workload is ../shared/articles (or --articles DIR)",
                o.articles.display()
            );
            std::process::exit(2);
        }
    };
    article_paths.sort();
    let articles: Vec<(String, String)> = article_paths
        .iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(p).unwrap()))
        .collect();

    // Workload: sentences with at least 3 words, newlines flattened, first 128 pieces.
    let config = model::load_config(&files.config).unwrap();
    let tok = SentenceTokenizer::from_file(&files.tokenizer, 128, config.framing()).unwrap();
    let mut sentences_txt = Vec::new();
    for (_, text) in &articles {
        for s in sentences::split(text) {
            let flat = text[s.start..s.end].split_whitespace().collect::<Vec<_>>().join(" ");
            if flat.split(' ').count() >= 3 {
                sentences_txt.push(flat);
            }
        }
    }
    let ids: Vec<Vec<u32>> = sentences_txt.iter().map(|s| tok.window_ids(&tok.tokenize(s).unwrap(), 0)).collect();
    let lens: Vec<usize> = ids.iter().map(|v| v.len()).collect();
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let sentences_file = out_dir.join("sentences.txt");
    std::fs::write(&sentences_file, sentences_txt.join("\n") + "\n").unwrap();
    let mean_len = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
    let threads = rayon::current_num_threads();
    println!(
        "workload: {} sentences from {} articles, mean {:.1} tokens (max {}), {} threads; sentences in {}",
        ids.len(),
        articles.len(),
        mean_len,
        lens.iter().max().unwrap(),
        threads,
        sentences_file.display()
    );

    // Encoders.
    let device = Device::Cpu;
    let tensors = model::merged_tensors(&files, &device).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    // As served: int8 with the folder's calibrated ranges, when it has them.
    let ranges = model::int8_ranges(&files, &config).unwrap();
    let fast: Vec<FastEncoder> = o
        .precisions
        .iter()
        .map(|&p| {
            FastEncoder::load_calibrated(vb.clone(), &config, p, ranges.as_ref().filter(|_| p == Precision::Int8))
                .unwrap()
        })
        .collect();
    for f in &fast {
        println!("{} dense weights: {:.0} MB ({:?})", f.precision(), f.dense_bytes() as f64 / 1e6, f.paths());
    }
    let reference = if o.reference { Some(Encoder::load(vb, &config).unwrap()) } else { None };
    let total_flops: f64 =
        lens.iter().map(|&l| flops(l, config.hidden_size, config.intermediate_size, config.num_hidden_layers)).sum();
    let (crate_rate, avx512_rate) = gemm_peak();
    let peak = crate_rate.max(if avx512_rate.is_nan() { 0.0 } else { avx512_rate });
    println!(
        "GEMM rate ({} threads, 2048x384x1536): gemm crate {:.1} GFLOP/s, AVX-512 kernel {:.1} GFLOP/s; peak = the better",
        threads,
        crate_rate / 1e9,
        avx512_rate / 1e9
    );
    let (h, inter) = (config.hidden_size, config.intermediate_size);
    for (m, k, n) in [(32, h, inter), (864, h, inter), (864, inter, h)] {
        println!(
            "dense layer {m}x{k}x{n} (GOP/s): {}",
            o.precisions
                .iter()
                .map(|&p| format!("{p} {:.1}", dense_rate(p, m, k, n) / 1e9))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let run_fast = |fast: &FastEncoder, batch: usize| -> (f64, Vec<f64>) {
        let mut lat = Vec::new();
        let t = Instant::now();
        for chunk in ids.chunks(batch) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|v| v.as_slice()).collect();
            let c = Instant::now();
            std::hint::black_box(fast.forward(&seqs).unwrap());
            lat.push(c.elapsed().as_secs_f64() * 1e3);
        }
        (ids.len() as f64 / t.elapsed().as_secs_f64(), lat)
    };
    let run_reference = |enc: &Encoder, batch: usize| -> f64 {
        let t = Instant::now();
        for chunk in ids.chunks(batch) {
            let windows: Vec<WindowInput> =
                chunk.iter().map(|v| WindowInput { ids: v.clone(), targets: vec![] }).collect();
            let refs: Vec<&WindowInput> = windows.iter().collect();
            let b = Batch::build(&refs, &device).unwrap();
            std::hint::black_box(enc.forward(&b.ids, &b.mask, Ops::Fused).unwrap());
        }
        ids.len() as f64 / t.elapsed().as_secs_f64()
    };

    // Warm-up.
    for f in &fast {
        run_fast(f, 32);
    }
    // By precision, then batch size: one rate per round.
    let mut fast_rates: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); o.batches.len()]; fast.len()];
    let mut ref_rates: Vec<Vec<f64>> = vec![Vec::new(); o.batches.len()];
    let mut fast_lat1: Vec<Vec<f64>> = vec![Vec::new(); fast.len()];
    let our_round =
        |fast_rates: &mut Vec<Vec<Vec<f64>>>, ref_rates: &mut Vec<Vec<f64>>, fast_lat1: &mut Vec<Vec<f64>>| {
            for (bi, &b) in o.batches.iter().enumerate() {
                for (pi, f) in fast.iter().enumerate() {
                    let (rate, lat) = run_fast(f, b);
                    fast_rates[pi][bi].push(rate);
                    if b == 1 {
                        fast_lat1[pi].extend(lat);
                    }
                }
                if let Some(r) = &reference {
                    ref_rates[bi].push(run_reference(r, b));
                }
            }
        };
    let mut peers: Option<Value> = None;
    if o.peers {
        our_round(&mut fast_rates, &mut ref_rates, &mut fast_lat1);
        peers = run_peers(&sentences_file, &o, &out_dir);
        for _ in 1..o.rounds {
            our_round(&mut fast_rates, &mut ref_rates, &mut fast_lat1);
        }
    } else {
        for _ in 0..o.rounds {
            our_round(&mut fast_rates, &mut ref_rates, &mut fast_lat1);
        }
    }

    // End to end: the whole engine over the articles, in each precision.
    let inputs: Vec<ArticleInput> = articles
        .iter()
        .map(|(id, text)| ArticleInput { id: id.clone(), text: text.clone(), ..Default::default() })
        .collect();
    let mut segments = 0;
    let mut e2e_med = Vec::new();
    let mut article_ms_all = Vec::new();
    for &p in &o.precisions {
        let model = StanceModel::load_with(&files, EncoderChoice::Fast(Some(p))).unwrap();
        let engine = Engine::new(model, Lexicon::default_actors(), Limits::default()).unwrap();
        engine.score_many(inputs.clone());
        let mut e2e = Vec::new();
        for _ in 0..o.rounds {
            let t = Instant::now();
            let res = engine.score_many(inputs.clone());
            segments = res.iter().map(|r| r.as_ref().unwrap().sentences.len()).sum::<usize>();
            e2e.push(segments as f64 / t.elapsed().as_secs_f64());
        }
        // Where the end-to-end time goes, stage by stage.
        let t = Instant::now();
        let prepared: Vec<_> = inputs.iter().map(|i| engine.prepare(i.clone()).unwrap()).collect();
        let prepare_s = t.elapsed().as_secs_f64();
        let (scores, run_s, n_windows, window_tokens) = {
            let windows: Vec<&WindowInput> = prepared.iter().flat_map(|p| p.windows.iter()).collect();
            let tokens: usize = windows.iter().map(|w| w.ids.len()).sum();
            let t = Instant::now();
            let scores = engine.run_windows(&windows).unwrap();
            (scores, t.elapsed().as_secs_f64(), windows.len(), tokens)
        };
        let t = Instant::now();
        let mut scores = scores.into_iter();
        for p in prepared {
            let n = p.windows.len();
            std::hint::black_box(engine.finish(p, scores.by_ref().take(n).collect()));
        }
        let finish_s = t.elapsed().as_secs_f64();
        println!(
            "engine stages ({p}): prepare {:.1} ms, encoder+heads {:.1} ms ({} windows, {} tokens), finish {:.1} ms",
            prepare_s * 1e3,
            run_s * 1e3,
            n_windows,
            window_tokens,
            finish_s * 1e3
        );
        let mut article_ms = Vec::new();
        for _ in 0..o.rounds.max(3) {
            for input in &inputs {
                let t = Instant::now();
                engine.score(input.clone()).unwrap();
                article_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        e2e_med.push(median(e2e));
        article_ms_all.push(article_ms);
    }

    // Report.
    println!("\nencoder only, sequences/s (median of {} rounds)", fast_rates[0][0].len());
    println!(
        "{:<28} {}",
        "engine",
        o.batches.iter().map(|b| format!("{:>10}", format!("batch {b}"))).collect::<String>()
    );
    let row =
        |name: &str, v: &[f64]| println!("{:<28} {}", name, v.iter().map(|x| format!("{x:>10.1}")).collect::<String>());
    let fast_med: Vec<Vec<f64>> =
        fast_rates.iter().map(|by_batch| by_batch.iter().map(|r| median(r.clone())).collect()).collect();
    for (p, med) in o.precisions.iter().zip(&fast_med) {
        row(&format!("stance fast {p}"), med);
    }
    let ref_med: Vec<f64> =
        if reference.is_some() { ref_rates.iter().map(|r| median(r.clone())).collect() } else { vec![] };
    if !ref_med.is_empty() {
        row("stance reference (candle)", &ref_med);
    }
    let mut peer_rows = serde_json::Map::new();
    if let Some(p) = &peers {
        for engine in ["torch", "ort-fp32", "ort-int8"] {
            if let Some(rates) = p["seq_per_s"].get(engine) {
                let v: Vec<f64> = o.batches.iter().map(|b| rates[b.to_string()].as_f64().unwrap_or(f64::NAN)).collect();
                row(engine, &v);
                peer_rows.insert(engine.to_string(), json!(v));
            }
        }
    }
    let share: Vec<Vec<f64>> =
        fast_med.iter().map(|m| m.iter().map(|r| r * total_flops / ids.len() as f64 / peak).collect()).collect();
    for (p, sh) in o.precisions.iter().zip(&share) {
        println!(
            "{:<28} {}",
            format!("share of fp32 peak ({p})"),
            sh.iter().map(|x| format!("{:>9.0}%", x * 100.0)).collect::<String>()
        );
    }
    let best = |v: &[f64]| v.iter().cloned().filter(|x| x.is_finite()).fold(0.0, f64::max);
    let by_precision = |p: Precision| o.precisions.iter().position(|&q| q == p);
    println!();
    for (pi, p) in o.precisions.iter().enumerate() {
        println!(
            "{p}: batch-1 latency p50 {:.2} ms, p99 {:.2} ms; end to end {:.1} sentences/s ({} articles, {} segments); one article p50 {:.1} ms, p99 {:.1} ms",
            percentile(fast_lat1[pi].clone(), 0.5),
            percentile(fast_lat1[pi].clone(), 0.99),
            e2e_med[pi],
            articles.len(),
            segments,
            percentile(article_ms_all[pi].clone(), 0.5),
            percentile(article_ms_all[pi].clone(), 0.99),
        );
    }
    let mut ratios = serde_json::Map::new();
    let mut ratio = |name: &str, what: String, v: f64| {
        println!("  {what:<52} {v:>6.2}");
        ratios.insert(name.to_string(), json!(v));
    };
    println!("\nratios:");
    let fp32 = by_precision(Precision::Fp32);
    for (pi, p) in o.precisions.iter().enumerate() {
        if let (Some(f), true) = (fp32, *p != Precision::Fp32) {
            ratio(
                &format!("best_{p}_vs_best_fp32"),
                format!("best {p} / best fp32"),
                best(&fast_med[pi]) / best(&fast_med[f]),
            );
        }
        for peer in ["ort-fp32", "ort-int8"] {
            let Some(v) = peer_rows.get(peer).and_then(|v| v.as_array()) else { continue };
            let theirs: Vec<f64> = v.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
            let key = peer.replace('-', "_");
            ratio(
                &format!("best_{p}_vs_best_{key}"),
                format!("best {p} / best {peer}"),
                best(&fast_med[pi]) / best(&theirs),
            );
            if let Some(b1) = o.batches.iter().position(|&b| b == 1) {
                ratio(
                    &format!("b1_{p}_vs_b1_{key}"),
                    format!("{p} / {peer} at batch 1"),
                    fast_med[pi][b1] / theirs[b1],
                );
            }
            ratio(
                &format!("e2e_{p}_vs_best_{key}"),
                format!("end to end {p} / best {peer}"),
                e2e_med[pi] / best(&theirs),
            );
        }
    }
    println!("peak RSS of this process: {:.0} MB", peak_rss_mb());
    let server = if o.server { Some(server_bench(&inputs, o.clients, o.rounds)) } else { None };
    if let Some(path) = &o.json {
        let fast_json: serde_json::Map<String, Value> =
            o.precisions.iter().zip(&fast_med).map(|(p, m)| (p.to_string(), json!(m))).collect();
        let e2e_json: serde_json::Map<String, Value> =
            o.precisions.iter().zip(&e2e_med).map(|(p, m)| (p.to_string(), json!(m))).collect();
        let report = json!({
            "workload": {"sentences": ids.len(), "mean_tokens": mean_len, "articles": articles.len()},
            "threads": threads,
            "gemm_peak_gflops": peak / 1e9,
            "gemm_crate_gflops": crate_rate / 1e9,
            "avx512_kernel_gflops": avx512_rate / 1e9,
            "batches": o.batches,
            "fast": fast_json,
            "reference": ref_med,
            "peers": peer_rows,
            "e2e_sentences_per_s": e2e_json,
            "ratios": ratios,
            "peak_rss_mb": peak_rss_mb(),
            "server": server,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}

/// Runs bench/peers/peers.py on the same sentences; `None` (with a message) if it cannot.
fn run_peers(sentences: &Path, o: &Opts, out_dir: &Path) -> Option<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/peers-venv/bin/python");
    if !python.is_file() {
        eprintln!("peers skipped: run `bash bench/peers/setup.sh` first");
        return None;
    }
    let json_path = out_dir.join("peers.json");
    let batches = o.batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",");
    let status = Command::new(python)
        .arg(root.join("bench/peers/peers.py"))
        .args(["--sentences"])
        .arg(sentences)
        .args(["--batches", &batches, "--rounds", &o.rounds.to_string(), "--model-dir"])
        .arg(&o.model)
        .args(o.peer_engines.as_ref().map(|e| ["--engines", e.as_str()]).into_iter().flatten())
        .arg("--json")
        .arg(&json_path)
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("peers failed ({status})");
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(json_path).ok()?).ok()
}

/// Starts the real server, times it to SERVING, loads it with concurrent clients and reads its
/// peak RSS.
fn server_bench(inputs: &[ArticleInput], clients: usize, rounds: usize) -> Value {
    use stance::wire::pb;
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stance"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start stance serve");
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").expect("first line: listening on ADDR").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (startup, elapsed, sentences) = rt.block_on(async {
        let remote =
            stance::client::Remote::connect(std::slice::from_ref(&addr), 64 << 20, &Default::default()).await.unwrap();
        let startup = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..clients {
            let mut client = remote.client(i).expect("a server");
            let inputs = inputs.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut sentences = 0usize;
                for _ in 0..rounds {
                    for input in &inputs {
                        let req = pb::ScoreArticleRequest { article: Some(input.clone().into()), seq: 0 };
                        let resp = client.score_article(req).await.expect("ScoreArticle");
                        sentences += resp.into_inner().score.map(|s| s.sentences.len()).unwrap_or(0);
                    }
                }
                sentences
            }));
        }
        let mut sentences = 0;
        for t in tasks {
            sentences += t.await.unwrap();
        }
        (startup, t.elapsed().as_secs_f64(), sentences)
    });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    println!(
        "server: start-up to SERVING {:.2} s; {} clients x {} rounds: {:.1} sentences/s; peak RSS {:.0} MB",
        startup,
        clients,
        rounds,
        sentences as f64 / elapsed,
        rss
    );
    json!({"startup_s": startup, "clients": clients, "sentences_per_s": sentences as f64 / elapsed, "peak_rss_mb": rss})
}
