//! `stance`: the command-line face of the library (scoring, training, evaluation).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use stance::encoder::Precision;
use stance::input::Limits;
use stance::mentions::lexicon::Lexicon;
use stance::model::{EncoderChoice, ModelFiles, StanceModel};
use stance::pipeline::Engine;
use stance::training::train::TrainConfig;

#[derive(Parser)]
#[command(
    name = "stance",
    version,
    about = "How news articles portray named actors: stance per actor and sentence, sentiment per sentence"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score articles in-process with a local or Hub model.
    Score(ScoreArgs),
    /// Train the heads (and top encoder layers) on NewsMTSC and VADER.
    Train(TrainArgs),
    /// Print NewsMTSC F1-macro (dev and test) and VADER held-out macro-F1 for a model.
    Eval(EvalArgs),
    /// Run the gRPC service (stance.v1.Stance, health, reflection, metrics).
    Serve(ServeArgs),
    /// Score a JSONL file, a directory of .txt files or stdin into a resumable JSONL file.
    Batch(BatchArgs),
    /// Write one self-contained HTML report (charts, tables, evidence) over scored JSONL, and
    /// with --csv DIR its tables as CSV.
    Report(cli::report::ReportOpts),
    /// Ask a server whether it is SERVING (grpc.health.v1): exit 0 if so, 1 otherwise (for
    /// probes, scripts and container health checks).
    Health(HealthArgs),
}

#[derive(Args)]
struct HealthArgs {
    /// The server, HOST:PORT or http://HOST:PORT.
    #[arg(long, env = "STANCE_REMOTE")]
    remote: String,
    /// Give up after this many seconds (connecting and the answer together).
    #[arg(long, default_value_t = 5.0)]
    timeout_s: f64,
    #[command(flatten)]
    connect: cli::remote::ConnectOpts,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    serve: cli::serve::ServeOpts,
}

#[derive(Args)]
struct BatchArgs {
    #[command(flatten)]
    batch: cli::batch::BatchOpts,
    /// In-process mode only (with --remote the servers' own model and limits apply).
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model folder, or a Hugging Face Hub id `org/name[@revision]`. Default: models/mpnet-base-stance.
    #[arg(long, env = "STANCE_MODEL")]
    model: Option<String>,
    /// Number format of the encoder's dense layers: fp32, bf16, int8, or auto (the one the
    /// model's manifest records as passing its accuracy gate, else fp32).
    #[arg(long, env = "STANCE_PRECISION", default_value = "auto")]
    precision: PrecisionArg,
}

/// `--precision`: a precision, or `auto` (`None`).
#[derive(Clone, Copy, Debug)]
struct PrecisionArg(Option<Precision>);

impl std::str::FromStr for PrecisionArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(PrecisionArg(None));
        }
        s.parse()
            .map(|p| PrecisionArg(Some(p)))
            .map_err(|e: stance::encoder::dense::UnknownPrecision| format!("{e} (or auto)"))
    }
}

impl ModelArgs {
    fn files(&self) -> Result<ModelFiles> {
        let spec = match &self.model {
            Some(m) => m.clone(),
            None => default_model_dir().display().to_string(),
        };
        Ok(ModelFiles::resolve(&spec)?)
    }
}

/// The default model: `models/mpnet-base-stance` under the working directory, else under the
/// source tree this binary was built from.
fn default_model_dir() -> PathBuf {
    let local = PathBuf::from(stance::DEFAULT_MODEL_DIR);
    if local.is_dir() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(stance::DEFAULT_MODEL_DIR)
    }
}

#[derive(Args)]
struct EngineArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Actor lexicon (TOML) replacing the default actors.
    #[arg(long, env = "STANCE_ACTORS")]
    actors: Option<PathBuf>,
    /// Largest article accepted, in bytes.
    #[arg(long, env = "STANCE_MAX_ARTICLE_BYTES", default_value_t = Limits::default().max_article_bytes)]
    max_article_bytes: usize,
    /// Most sentences accepted in one article.
    #[arg(long, env = "STANCE_MAX_SENTENCES", default_value_t = Limits::default().max_sentences)]
    max_sentences: usize,
    /// Most encoder windows for one article (plain and target-marked together): bounds the
    /// compute one article can take.
    #[arg(long, env = "STANCE_MAX_WINDOWS", default_value_t = Limits::default().max_windows)]
    max_windows: usize,
}

impl EngineArgs {
    fn engine(&self) -> Result<Engine> {
        let files = self.model.files()?;
        let model = StanceModel::load_with(&files, EncoderChoice::Fast(self.model.precision.0))?;
        let lexicon = match &self.actors {
            Some(p) => Lexicon::from_toml_file(p)?,
            None => Lexicon::default_actors(),
        };
        let limits = Limits {
            max_article_bytes: self.max_article_bytes,
            max_sentences: self.max_sentences,
            max_windows: self.max_windows,
            ..Limits::default()
        };
        Ok(Engine::new(model, lexicon, limits)?)
    }
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    score: cli::score::ScoreOpts,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct TrainArgs {
    /// Folder with the base encoder (config.json, tokenizer.json, encoder.safetensors).
    #[arg(long, default_value = stance::SMALL_MODEL_DIR)]
    base: String,
    /// Folder holding newsmtsc/ and vader/ (and conflict-stance/ with --conflict).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Where to write the trained model folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "minilm-l6-stance")]
    name: String,
    #[arg(long, default_value = "0.1.0")]
    version: String,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Top encoder layers to fine-tune (the rest stay frozen).
    #[arg(long, default_value_t = TrainConfig::default().train_layers)]
    train_layers: usize,
    #[arg(long, default_value_t = TrainConfig::default().lr_encoder)]
    lr_encoder: f64,
    #[arg(long, default_value_t = TrainConfig::default().lr_heads)]
    lr_heads: f64,
    #[arg(long, default_value_t = TrainConfig::default().head_hidden)]
    head_hidden: usize,
    #[arg(long, default_value_t = TrainConfig::default().max_tokens)]
    max_tokens: usize,
    #[arg(long, default_value_t = TrainConfig::default().sentence_epochs)]
    sentence_epochs: usize,
    /// Tell the encoder which actor is judged: wrap its mentions in these two vocabulary
    /// tokens, e.g. `--markers '<,>'` (one pass per sentence and actor). Without it, mention
    /// states are pooled from one pass per sentence.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    markers: Option<Vec<String>>,
    /// Also train on conflict-stance train (DATA/conflict-stance) and choose epochs on its dev.
    #[arg(long)]
    conflict: bool,
    /// How many times each conflict-stance pair is seen per epoch.
    #[arg(long, default_value_t = TrainConfig::default().conflict_repeat)]
    conflict_repeat: usize,
    /// Use the first N sentences of every data set only, dev sets included (smoke tests).
    #[arg(long, default_value_t = TrainConfig::default().limit)]
    limit: usize,
    /// Train on this share (0 < F <= 1) of NewsMTSC train's sentences, a fixed seeded sample,
    /// the same every epoch: to weight conflict-stance without repeating it.
    #[arg(long, default_value_t = TrainConfig::default().newsmtsc_fraction)]
    newsmtsc_fraction: f64,
    /// Start from the --base folder's own trained part (its stance.safetensors: fine-tuned
    /// layers and heads) and train it further, instead of starting from the base encoder alone.
    #[arg(long)]
    init_trained: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder holding newsmtsc/, conflict-stance/ and vader/.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Also score the test sets (report only; never tune on them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    test: bool,
    /// Write the scores into the model folder's manifest.json.
    #[arg(long)]
    record: bool,
    /// Fit the heads' softmax temperatures on the dev sets (target head: NewsMTSC dev and
    /// conflict-stance dev; sentence head: VADER dev) and write them into manifest.json, with
    /// the uncalibrated scores and the calibration error before and after; a later `--record`
    /// records the calibrated scores and keeps that calibration record.
    #[arg(long)]
    calibrate: bool,
    /// Score with the candle-op reference encoder instead of the fast one (parity checks).
    #[arg(long)]
    reference_encoder: bool,
    /// Write every prediction (set, item, target, gold, predicted) as JSONL to this file.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// With `--precision int8`: first observe the int8 layers' activation ranges with the fp32
    /// encoder on the first N sentences of NewsMTSC train and of conflict-stance train each,
    /// write them into the model folder (int8_ranges.safetensors, read by the int8 encoder),
    /// then evaluate with them.
    #[arg(long, value_name = "N")]
    fit_int8_ranges: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Score(_) | Command::Batch(_) | Command::Health(_) | Command::Report(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Score(a) => cli::score::run(a.score, || a.engine.engine()),
        Command::Train(a) => train(a).map(|_| ExitCode::SUCCESS),
        Command::Eval(a) => eval_encoder(&a)
            .and_then(|encoder| {
                cli::eval::run(
                    a.model.files(),
                    &cli::eval::EvalOptions {
                        data: a.data,
                        test: a.test,
                        record: a.record,
                        calibrate: a.calibrate,
                        encoder,
                        predictions: a.predictions,
                        fit_int8_ranges: a.fit_int8_ranges,
                    },
                )
            })
            .map(|_| ExitCode::SUCCESS),
        Command::Serve(a) => cli::serve::run(a.serve, move || a.engine.engine()).map(|_| ExitCode::SUCCESS),
        Command::Batch(a) => cli::batch::run(a.batch, || a.engine.engine()),
        Command::Health(a) => cli::health::run(&a.remote, a.timeout_s, &a.connect),
        Command::Report(o) => cli::report::run(o),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The encoder `stance eval` scores with: the reference one is fp32 only.
fn eval_encoder(a: &EvalArgs) -> Result<EncoderChoice> {
    match (a.reference_encoder, a.model.precision.0) {
        // The manifest's scores and the temperatures are fp32's; another precision is gated
        // against them when named.
        (false, p) => Ok(EncoderChoice::Fast(Some(p.unwrap_or(Precision::Fp32)))),
        (true, None | Some(Precision::Fp32)) => Ok(EncoderChoice::Reference),
        (true, Some(p)) => {
            anyhow::bail!("--reference-encoder runs fp32 only; drop --precision {p} or the reference encoder")
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let base = ModelFiles::resolve(&a.base)?;
    let cfg = TrainConfig {
        seed: a.seed,
        epochs: a.epochs,
        batch_size: a.batch_size,
        train_layers: a.train_layers,
        lr_encoder: a.lr_encoder,
        lr_heads: a.lr_heads,
        head_hidden: a.head_hidden,
        max_tokens: a.max_tokens,
        sentence_epochs: a.sentence_epochs,
        limit: a.limit,
        markers: match a.markers.as_deref() {
            None => None,
            Some([open, close]) => Some((open.clone(), close.clone())),
            Some(other) => anyhow::bail!("--markers takes two tokens separated by a comma (OPEN,CLOSE), got {other:?}"),
        },
        conflict: a.conflict,
        conflict_repeat: a.conflict_repeat,
        newsmtsc_fraction: a.newsmtsc_fraction,
        init_trained: a.init_trained,
        ..Default::default()
    };
    Ok(stance::training::train::train(&base, &a.data, &a.out, &cfg, &a.name, &a.version)?)
}
