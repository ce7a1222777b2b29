//! `graunt whisper …`: the whisper-*.py scripts rebuilt on graunt-storage,
//! with their arguments, output and exit codes, plus `--now` so results do
//! not depend on the clock.

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use graunt_storage::whisper::{
    self, parse_precision, parse_retention, AggregationMethod, CreateOptions, Header, WhisperError,
    WhisperFile, POINT_SIZE,
};

use graunt_query::pyfmt::{float_repr, format_f, format_g};

/// The whisper file tools.
#[derive(Debug, Subcommand)]
pub enum WhisperCommand {
    /// Print a file's header (whisper-info.py).
    Info(InfoArgs),
    /// Print the values of a time range (whisper-fetch.py).
    Fetch(FetchArgs),
    /// Print the header and every slot of every archive (whisper-dump.py).
    Dump(DumpArgs),
    /// Create a file (whisper-create.py).
    Create(CreateArgs),
    /// Store TIMESTAMP:VALUE points (whisper-update.py).
    Update(UpdateArgs),
    /// Change a file's archives, keeping its data (whisper-resize.py).
    Resize(super::resize::ResizeArgs),
    /// Copy one file's data into another with the same archives (whisper-merge.py).
    Merge(MergeArgs),
    /// Fill another file's gaps from this one (whisper-fill.py).
    Fill(FillArgs),
    /// Change the aggregation method, and optionally xFilesFactor (whisper-set-aggregation-method.py).
    SetAggregation(SetAggregationArgs),
}

/// An error printed as it is, without whisper's `[ERROR] ` prefix.
#[derive(Debug)]
pub(super) struct Plain(pub String);

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Plain {}

/// Runs a whisper tool; failures print as the Python scripts print them
/// (`[ERROR] message` on stderr) and exit 1.
pub fn run(cmd: WhisperCommand) -> ExitCode {
    let result = match cmd {
        WhisperCommand::Info(a) => info(a),
        WhisperCommand::Fetch(a) => fetch(a),
        WhisperCommand::Dump(a) => dump(a),
        WhisperCommand::Create(a) => create(a),
        WhisperCommand::Update(a) => update(a),
        WhisperCommand::Resize(a) => super::resize::resize(a),
        WhisperCommand::Merge(a) => merge(a),
        WhisperCommand::Fill(a) => fill(a),
        WhisperCommand::SetAggregation(a) => set_aggregation(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<Plain>() {
                Some(plain) if plain.0.is_empty() => {}
                Some(plain) => eprintln!("{plain}"),
                None => eprintln!("[ERROR] {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `--now`, or the clock.
pub(super) fn now_or_clock(now: Option<i64>) -> i64 {
    now.unwrap_or_else(|| jiff::Timestamp::now().as_second())
}

/// Writes `text` to stdout, ignoring a closed pipe as the scripts do (SIGPIPE default).
pub(super) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush());
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The whisper file.
    path: PathBuf,
    /// Print only this field (aggregationMethod, maxRetention, xFilesFactor, archives, fileSize).
    field: Option<String>,
    /// Output JSON.
    #[arg(long)]
    json: bool,
}

/// An archive as whisper-info prints it: (key, value) in Python dict order.
fn archive_fields(a: &whisper::ArchiveInfo) -> [(&'static str, u64); 5] {
    [
        ("offset", u64::from(a.offset)),
        ("secondsPerPoint", u64::from(a.seconds_per_point)),
        ("points", u64::from(a.points)),
        ("retention", a.retention() as u64),
        ("size", a.size()),
    ]
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let file = WhisperFile::open(&a.path)?;
    let h = file.header();
    let file_size = file
        .file()
        .metadata()
        .with_context(|| a.path.display().to_string())?
        .len();
    let xff = float_repr(f64::from(h.x_files_factor));
    let archives_repr = || {
        let items: Vec<String> = h
            .archives
            .iter()
            .map(|ar| {
                let fields: Vec<String> = archive_fields(ar)
                    .iter()
                    .map(|(k, v)| format!("'{k}': {v}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            })
            .collect();
        format!("[{}]", items.join(", "))
    };
    if let Some(field) = a.field {
        let value = match field.as_str() {
            "aggregationMethod" => h.aggregation.name().to_string(),
            "maxRetention" => h.max_retention.to_string(),
            "xFilesFactor" => xff,
            "archives" => archives_repr(),
            "fileSize" => file_size.to_string(),
            _ => {
                out(&format!(
                    "Unknown field \"{field}\". Valid fields are aggregationMethod,maxRetention,xFilesFactor,archives,fileSize\n"
                ));
                return Err(Plain(String::new()).into());
            }
        };
        out(&format!("{value}\n"));
        return Ok(());
    }
    let mut s = String::new();
    if a.json {
        // json.dumps(info, indent=2, separators=(',', ': '))
        s.push_str("{\n");
        let _ = writeln!(s, "  \"aggregationMethod\": \"{}\",", h.aggregation);
        let _ = writeln!(s, "  \"maxRetention\": {},", h.max_retention);
        let _ = writeln!(s, "  \"xFilesFactor\": {xff},");
        s.push_str("  \"archives\": [\n");
        for (i, ar) in h.archives.iter().enumerate() {
            s.push_str("    {\n");
            let fields = archive_fields(ar);
            for (j, (k, v)) in fields.iter().enumerate() {
                let comma = if j + 1 < fields.len() { "," } else { "" };
                let _ = writeln!(s, "      \"{k}\": {v}{comma}");
            }
            s.push_str(if i + 1 < h.archives.len() {
                "    },\n"
            } else {
                "    }\n"
            });
        }
        s.push_str("  ],\n");
        let _ = writeln!(s, "  \"fileSize\": {file_size}");
        s.push_str("}\n");
    } else {
        let _ = writeln!(s, "aggregationMethod: {}", h.aggregation);
        let _ = writeln!(s, "maxRetention: {}", h.max_retention);
        let _ = writeln!(s, "xFilesFactor: {xff}");
        let _ = writeln!(s, "fileSize: {file_size}");
        s.push('\n');
        for (i, ar) in h.archives.iter().enumerate() {
            let _ = writeln!(s, "Archive {i}");
            for (k, v) in archive_fields(ar) {
                let _ = writeln!(s, "{k}: {v}");
            }
            s.push('\n');
        }
    }
    out(&s);
    Ok(())
}

/// whisper-fetch's `--drop` filters.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Drop {
    /// Drop missing values.
    Nulls,
    /// Drop zero values.
    Zeroes,
    /// Drop missing and zero values.
    Empty,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct FetchArgs {
    /// The whisper file.
    path: PathBuf,
    /// Start of the range, epoch seconds (default: 24 hours before now).
    #[arg(long)]
    from: Option<i64>,
    /// End of the range, epoch seconds (default: now).
    #[arg(long)]
    until: Option<i64>,
    /// The reference time, epoch seconds (default: the clock).
    #[arg(long)]
    now: Option<i64>,
    /// Read the archive of this precision (`60`, `1m`): whisper's archiveToSelect.
    #[arg(long)]
    archive: Option<String>,
    /// Output JSON; a range whisper has no data for prints `null`.
    #[arg(long)]
    json: bool,
    /// Human-readable timestamps.
    #[arg(long)]
    pretty: bool,
    /// strftime format for --pretty.
    #[arg(short = 't', long = "time-format")]
    time_format: Option<String>,
    /// Drop values: nulls, zeroes or empty (both).
    #[arg(long, value_enum)]
    drop: Option<Drop>,
}

/// Python's `time.ctime(t)` or `time.strftime(fmt, time.localtime(t))`.
pub(super) fn pretty_time(t: i64, format: Option<&str>) -> String {
    let Ok(ts) = jiff::Timestamp::from_second(t) else {
        return t.to_string();
    };
    let zoned = ts.to_zoned(jiff::tz::TimeZone::system());
    zoned
        .strftime(format.unwrap_or("%a %b %e %H:%M:%S %Y"))
        .to_string()
}

fn fetch(a: FetchArgs) -> anyhow::Result<()> {
    let now = now_or_clock(a.now);
    let from = a.from.unwrap_or(now - 86400);
    let until = a.until.unwrap_or(now);
    let archive = a.archive.as_deref().map(parse_precision).transpose()?;
    let file = WhisperFile::open(&a.path)?;
    let Some(series) = file.fetch(from, Some(until), now, archive)? else {
        if a.json {
            out("null\n");
            return Ok(());
        }
        return Err(Plain("No data in selected timerange".into()).into());
    };
    let keep = |v: &Option<f64>| match a.drop {
        None => true,
        Some(Drop::Nulls) => v.is_some(),
        // `x != 0` in Python: None != 0 is true.
        Some(Drop::Zeroes) => *v != Some(0.0),
        Some(Drop::Empty) => v.is_some() && *v != Some(0.0),
    };
    let values: Vec<Option<f64>> = series.values.into_iter().filter(keep).collect();
    let mut s = String::new();
    if a.json {
        let items: Vec<String> = values
            .iter()
            .map(|v| v.map_or_else(|| "null".to_string(), float_repr))
            .collect();
        let _ = write!(
            s,
            "{{\n    \"start\" : {},\n    \"end\" : {},\n    \"step\" : {},\n    \"values\" : [{}]\n  }}\n",
            series.start,
            series.end,
            series.step,
            items.join(", ")
        );
    } else {
        let mut t = series.start;
        for v in values {
            let time = if a.pretty {
                pretty_time(t, a.time_format.as_deref())
            } else {
                t.to_string()
            };
            let value = v.map_or_else(|| "None".to_string(), format_f);
            let _ = writeln!(s, "{time}\t{value}");
            t += series.step;
        }
    }
    out(&s);
    Ok(())
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The whisper file.
    path: PathBuf,
    /// Human-readable timestamps.
    #[arg(long)]
    pretty: bool,
    /// strftime format for --pretty.
    #[arg(short = 't', long = "time-format")]
    time_format: Option<String>,
    /// Only `timestamp:value` lines, as whisper-update reads them.
    #[arg(short = 'r', long)]
    raw: bool,
}

fn dump(a: DumpArgs) -> anyhow::Result<()> {
    if !a.path.exists() {
        bail!("File \"{}\" does not exist!", a.path.display());
    }
    let file = WhisperFile::open(&a.path)?;
    let h: &Header = file.header();
    // The whole file is read once, front to back: a mapping saves the copy.
    // SAFETY: the map is read-only and dropped before returning; a concurrent
    // writer can change values under us (as with whisper-dump), never lengths
    // we rely on, because the header was checked against the file's size.
    let map = unsafe { memmap2::Mmap::map(file.file()) }
        .with_context(|| format!("cannot map {}", a.path.display()))?;
    let mut s = String::new();
    if !a.raw {
        s.push_str("Meta data:\n");
        let _ = writeln!(s, "  aggregation method: {}", h.aggregation);
        let _ = writeln!(s, "  max retention: {}", h.max_retention);
        let _ = writeln!(
            s,
            "  xFilesFactor: {}",
            format_g(f64::from(h.x_files_factor), 6)
        );
        s.push('\n');
        for (i, ar) in h.archives.iter().enumerate() {
            let _ = writeln!(s, "Archive {i} info:");
            for (k, v) in archive_fields(ar) {
                let label = match k {
                    "secondsPerPoint" => "seconds per point",
                    other => other,
                };
                let _ = writeln!(s, "  {label}: {v}");
            }
            s.push('\n');
        }
    }
    out(&s);
    for (i, ar) in h.archives.iter().enumerate() {
        let mut s = String::new();
        if !a.raw {
            let _ = writeln!(s, "Archive {i} data:");
        }
        let bytes = &map[ar.offset as usize..ar.end() as usize];
        for (n, p) in bytes.chunks_exact(POINT_SIZE as usize).enumerate() {
            let ts = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let value = f64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]);
            if a.raw {
                let _ = writeln!(s, "{ts}:{}", format_g(value, 35));
            } else {
                let time = if a.pretty {
                    pretty_time(i64::from(ts), a.time_format.as_deref())
                } else {
                    ts.to_string()
                };
                let _ = writeln!(s, "{n}: {time}, {:>10}", format_g(value, 35));
            }
        }
        out(&s);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The file to create, then its archives (`60:1440`, `15m:8`, `1h:7d`, `12h:2y`);
    /// with --estimate, only archives.
    #[arg(required = true)]
    args: Vec<String>,
    /// Fraction of known points needed to propagate to a coarser archive.
    #[arg(long = "xFilesFactor", default_value_t = 0.5)]
    x_files_factor: f64,
    /// Aggregation method: average, sum, last, max, min, avg_zero, absmax, absmin.
    #[arg(long = "aggregationMethod", default_value = "average")]
    aggregation_method: String,
    /// Replace an existing file.
    #[arg(long)]
    overwrite: bool,
    /// Print the size the archives would take instead of creating a file.
    #[arg(long)]
    estimate: bool,
    /// Create a sparse file.
    #[arg(long)]
    sparse: bool,
    /// Preallocate (the file is zero-filled in full either way).
    #[arg(long)]
    fallocate: bool,
}

/// whisper-create's `byte_format`.
fn byte_format(mut num: f64) -> String {
    for unit in ["bytes", "KB", "MB"] {
        if num < 1024.0 {
            return format!("{num:.3}{unit}");
        }
        num /= 1024.0;
    }
    format!("{num:.3}GB")
}

fn create(a: CreateArgs) -> anyhow::Result<()> {
    if a.estimate {
        let defs: Vec<String> = if a.args.len() == 1 && a.args[0].find(',').is_some_and(|i| i > 0) {
            a.args[0].split(',').map(str::to_string).collect()
        } else {
            a.args.clone()
        };
        let mut s = String::new();
        let mut total_points = 0u64;
        for (i, def) in defs.iter().enumerate() {
            let r = parse_retention(def)?;
            let _ = writeln!(
                s,
                "Archive {i}: {} points of {}s precision",
                r.points, r.seconds_per_point
            );
            total_points += u64::from(r.points);
        }
        let size = 16 + defs.len() as u64 * 12 + total_points * 12;
        let disk_size = size.div_ceil(4096) * 4096;
        let _ = writeln!(
            s,
            "\nEstimated Whisper DB Size: {} ({disk_size} bytes on disk with 4k blocks)\n",
            byte_format(size as f64)
        );
        for x in [1u64, 5, 10, 50, 100, 500] {
            let _ = writeln!(
                s,
                "Estimated storage requirement for {x}k metrics: {}",
                byte_format((x * 1000 * disk_size) as f64)
            );
        }
        out(&s);
        return Ok(());
    }
    if a.args.len() < 2 {
        bail!("usage: graunt whisper create PATH timePerPoint:timeToStore [timePerPoint:timeToStore]*");
    }
    let path = Path::new(&a.args[0]);
    let archives = a.args[1..]
        .iter()
        .map(|d| parse_retention(d))
        .collect::<Result<Vec<_>, _>>()?;
    let aggregation: AggregationMethod = a.aggregation_method.parse()?;
    if path.exists() && a.overwrite {
        out(&format!("Overwriting existing file: {}\n", path.display()));
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    let opts = CreateOptions {
        x_files_factor: a.x_files_factor,
        aggregation,
        sparse: a.sparse,
    };
    whisper::create(path, &archives, &opts)?;
    let size = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    out(&format!("Created: {} ({size} bytes)\n", path.display()));
    Ok(())
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct UpdateArgs {
    /// The whisper file.
    path: PathBuf,
    /// TIMESTAMP:VALUE points (`N:VALUE` is now); read one per line from stdin when none.
    points: Vec<String>,
    /// The reference time, epoch seconds (default: the clock).
    #[arg(long)]
    now: Option<i64>,
}

/// Parses `TIMESTAMP:VALUE` as whisper-update does (`int()`, `float()`).
fn parse_point(text: &str) -> anyhow::Result<(i64, f64)> {
    let parts: Vec<&str> = text.split(':').collect();
    let [ts, value] = parts[..] else {
        bail!("invalid point {text:?}: expected TIMESTAMP:VALUE");
    };
    let ts: i64 = ts.trim().parse().map_err(|_| {
        anyhow!("invalid timestamp {ts:?} in {text:?}: expected whole epoch seconds")
    })?;
    let value = parse_python_float(value.trim())
        .ok_or_else(|| anyhow!("invalid value {value:?} in {text:?}: expected a number"))?;
    Ok((ts, value))
}

/// Python's `float()` of a string: Rust's parser plus Python's spellings of
/// infinity and NaN (Rust already accepts `inf`, `infinity`, `nan`).
pub(super) fn parse_python_float(s: &str) -> Option<f64> {
    s.replace('_', "")
        .parse::<f64>()
        .ok()
        .filter(|_| !s.starts_with('_') && !s.ends_with('_'))
}

fn update(a: UpdateArgs) -> anyhow::Result<()> {
    let now = now_or_clock(a.now);
    let lines: Vec<String> = if a.points.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .context("reading stdin")?
    } else {
        a.points
    };
    let points = lines
        .iter()
        .map(|p| parse_point(&p.replace("N:", &format!("{now}:"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut file = WhisperFile::open_rw(&a.path)?;
    if let [(ts, value)] = points[..] {
        file.update(value, Some(ts), now)?;
    } else {
        file.update_many(&points, now)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct MergeArgs {
    /// The file to read.
    from_path: PathBuf,
    /// The file to write.
    to_path: PathBuf,
    /// Start of the interval, epoch seconds (default: 0).
    #[arg(long)]
    from: Option<i64>,
    /// End of the interval, epoch seconds (default: now).
    #[arg(long)]
    until: Option<i64>,
    /// The reference time, epoch seconds (default: the clock).
    #[arg(long)]
    now: Option<i64>,
}

fn must_exist(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("File \"{}\" does not exist!", path.display());
    }
    Ok(())
}

fn merge(a: MergeArgs) -> anyhow::Result<()> {
    must_exist(&a.from_path)?;
    must_exist(&a.to_path)?;
    whisper::merge(
        &a.from_path,
        &a.to_path,
        a.from,
        a.until,
        now_or_clock(a.now),
    )?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct FillArgs {
    /// The file holding the data.
    src: PathBuf,
    /// The file whose gaps are filled.
    dst: PathBuf,
    /// Lock the files (graunt always locks the file it writes).
    #[arg(long)]
    lock: bool,
    /// The reference time, epoch seconds (default: the clock).
    #[arg(long)]
    now: Option<i64>,
}

fn fill(a: FillArgs) -> anyhow::Result<()> {
    whisper::fill(&a.src, &a.dst, now_or_clock(a.now))?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct SetAggregationArgs {
    /// The whisper file.
    path: PathBuf,
    /// average, sum, last, max, min, avg_zero, absmax or absmin.
    method: String,
    /// New xFilesFactor (default: unchanged).
    x_files_factor: Option<String>,
}

fn set_aggregation(a: SetAggregationArgs) -> anyhow::Result<()> {
    if !a.path.exists() {
        return Err(Plain(format!(
            "[ERROR] File '{}' does not exist!\n",
            a.path.display()
        ))
        .into());
    }
    let method: AggregationMethod = a.method.parse()?;
    let xff = match a.x_files_factor.as_deref() {
        None => None,
        Some(s) => Some(parse_python_float(s.trim()).ok_or_else(|| {
            WhisperError::InvalidXFilesFactor(format!("Invalid xFilesFactor {s}, not a float"))
        })?),
    };
    let (old, _) = whisper::set_aggregation(&a.path, method, xff)?;
    out(&format!(
        "Updated aggregation method: {} ({old} -> {method})\n",
        a.path.display()
    ));
    Ok(())
}
