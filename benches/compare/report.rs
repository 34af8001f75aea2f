//! The report of a run: the markdown tables, the checks against the targets, and
//! `docs/BENCHMARKS.md` / `target/bench/compare.json`.

use super::*;

/// Renders a Markdown table padded to its column widths, so that it reads in a terminal too;
/// the first `left` columns are left-aligned, the others right-aligned.
pub(crate) fn markdown(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let cells = cells.iter().zip(&widths).enumerate().map(|(i, (c, &w))| {
            if i < left {
                format!("{c:<w$}")
            } else {
                format!("{c:>w$}")
            }
        });
        format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "))
    };
    let rule = widths.iter().enumerate().map(|(i, &w)| {
        let dashes = "-".repeat(w + 1);
        if i < left {
            format!(":{dashes}")
        } else {
            format!("{dashes}:")
        }
    });
    let mut out = line(header.to_vec());
    out += &format!("|{}|\n", rule.collect::<Vec<_>>().join("|"));
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A ratio to two decimals, or "—" where its reference was not run (direct at c=1000).
fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "—".to_owned()
    }
}

/// The run of `target` with `m`'s workload and concurrency, if there was one.
fn peer<'a>(runs: &'a [Measured], m: &Measured, target: Target) -> Option<&'a Measured> {
    let same = |r: &&Measured| r.workload == m.workload && r.concurrency == m.concurrency;
    runs.iter().filter(same).find(|r| r.target == target.name())
}

/// The table's rows: each run with its ratios; pgbench's figures after each select
/// concurrency's last row.
pub(crate) fn table(runs: &[Measured], pgbench_runs: &[PgbenchRun]) -> Vec<Vec<String>> {
    let qps_of = |m: &Measured, target: Target| peer(runs, m, target).map_or(f64::NAN, |r| r.qps);
    let mut rows = Vec::new();
    for m in runs {
        let (direct, bouncer) = (qps_of(m, Target::Direct), qps_of(m, Target::Bouncer));
        // The additive floor: the hop and the direct query one after the other on the same
        // cores, 1 / (1/hop + 1/direct).
        let floor = 1.0 / (1.0 / qps_of(m, Target::Hop) + 1.0 / direct);
        let to_floor = ratio(m.qps / floor);
        let cpu = m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
        let (p50, p99) = (format!("{:.1}", m.p50_us), format!("{:.1}", m.p99_us));
        let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
        let ratios = [m.qps / direct, m.qps / bouncer].map(ratio);
        let [to_direct, to_bouncer] = ratios;
        let (qps, errors) = (format!("{:.0}", m.qps), m.errors.to_string());
        let target = m.target.to_owned();
        rows.push(vec![
            label, conc, target, qps, p50, p99, to_direct, to_bouncer, to_floor, errors, cpu,
        ]);
        if m.workload != "select" || m.target != Target::Hop.name() {
            continue;
        }
        for p in pgbench_runs
            .iter()
            .filter(|p| p.concurrency == m.concurrency)
        {
            let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
            let target = format!("pgbench {} -M {}", p.via, p.mode);
            let ratios = [p.tps / direct, p.tps / bouncer, p.tps / floor];
            let [to_direct, to_bouncer, to_floor] = ratios.map(ratio);
            let (tps, failed, dash) = (format!("{:.0}", p.tps), p.failed.to_string(), "—");
            let avg = format!("avg {:.1}", p.latency_avg_ms * 1000.0);
            let row = [
                label,
                conc,
                target,
                tps,
                avg,
                dash.into(),
                to_direct,
                to_bouncer,
                to_floor,
            ];
            rows.push(row.into_iter().chain([failed, dash.into()]).collect());
        }
    }
    rows
}

/// The error samples of every run that had errors, one line each (empty when none had).
pub(crate) fn error_lines(runs: &[Measured]) -> String {
    let mut out = String::new();
    for m in runs.iter().filter(|m| m.errors > 0) {
        for e in &m.error_samples {
            let (w, t, c, n) = (m.workload, m.target, m.concurrency, m.errors);
            out += &format!("- {w} {t} c={c} ({n} errors): {e}\n");
        }
    }
    out
}

/// The 10,000-client run: its figures, pgsidecar's memory and the error samples.
pub(crate) fn big_table(big: &BigRun) -> String {
    let m = &big.load;
    let mib = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1}"));
    let cpu = m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
    let row = vec![
        m.target.to_owned(),
        m.concurrency.to_string(),
        m.queries.to_string(),
        format!("{:.0}", m.qps),
        format!("{:.1}", m.p50_us),
        format!("{:.1}", m.p99_us),
        m.errors.to_string(),
        mib(big.peak_rss_mib),
        mib(big.rss_before_mib),
        mib(big.rss_after_mib),
        cpu,
    ];
    let header = [
        "target",
        "clients",
        "queries",
        "q/s",
        "p50 µs",
        "p99 µs",
        "errors",
        "peak RSS MiB",
        "RSS before MiB",
        "RSS after MiB",
        "CPU µs/q",
    ];
    let mut out = markdown(&header, &[row], 1);
    for e in &m.error_samples {
        out += &format!("- error sample: {e}\n");
    }
    out
}

/// The pipeline sweep at c=32, with each cell's ratio to PgBouncer and to the leased
/// sidecar of the main table (same workload and concurrency, longer runs).
pub(crate) fn sweep_table(sweep: &[SweepRun], runs: &[Measured]) -> String {
    let of = |t: Target| {
        let at32 = |m: &&Measured| m.workload == "select" && m.concurrency == 32;
        let found = runs.iter().filter(at32).find(|m| m.target == t.name());
        found.map_or(f64::NAN, |m| m.qps)
    };
    let (bouncer, leased) = (of(Target::Bouncer), of(Target::Leased));
    let rows: Vec<Vec<String>> = sweep
        .iter()
        .map(|s| {
            let m = &s.load;
            let cpu = m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
            let mut row = vec![s.connections.to_string(), s.depth.to_string()];
            row.push(format!("{:.0}", m.qps));
            row.extend([m.p50_us, m.p99_us].map(|v| format!("{v:.1}")));
            row.extend([m.qps / bouncer, m.qps / leased].map(ratio));
            row.extend([m.errors.to_string(), cpu]);
            row
        })
        .collect();
    let header = [
        "pipeline connections",
        "depth",
        "q/s",
        "p50 µs",
        "p99 µs",
        "×pgbouncer",
        "×leased",
        "errors",
        "CPU µs/q",
    ];
    let mut out = markdown(&header, &rows, 0);
    for m in sweep.iter().map(|s| &s.load) {
        for e in &m.error_samples {
            out += &format!("- error sample (c={}): {e}\n", m.concurrency);
        }
    }
    out
}

/// Issue 14's targets, judged on this run's select figures, for pgsidecar pipelined and,
/// beside it for reference, leased: [measure, target, pipelined, met, leased, met].
pub(crate) fn pipeline_checks(runs: &[Measured], big: &BigRun) -> Vec<Vec<String>> {
    let get = |c: usize, t: Target| {
        let select = |m: &&Measured| m.workload == "select" && m.concurrency == c;
        runs.iter().filter(select).find(|m| m.target == t.name())
    };
    let qps = |c, t| get(c, t).map_or(f64::NAN, |m| m.qps);
    let met = |ok: bool| if ok { "met" } else { "missed" }.to_owned();
    // Both sidecars' cells of a row; a comparison with a figure not measured (NaN) misses.
    let both = |cell: &dyn Fn(Target) -> (String, bool)| {
        let [(p, p_ok), (l, l_ok)] = [Target::Sidecar, Target::Leased].map(cell);
        [p, met(p_ok), l, met(l_ok)]
    };
    let mut out = Vec::new();
    let mut push = |measure: String, target: &str, cells: [String; 4]| {
        out.push([vec![measure, target.to_owned()], cells.to_vec()].concat());
    };
    for c in [32, 256] {
        let b = qps(c, Target::Bouncer);
        let cells = both(&|t| {
            let s = qps(c, t);
            (
                format!("{:.2}× ({s:.0} vs {b:.0} q/s)", s / b),
                s >= 1.5 * b,
            )
        });
        push(format!("c={c} q/s ÷ PgBouncer"), "≥ 1.50×", cells);
    }
    let floor = 1.0 / (1.0 / qps(32, Target::Hop) + 1.0 / qps(32, Target::Direct));
    let cells = both(&|t| {
        let s = qps(32, t);
        let text = format!("{:.2}× ({s:.0} vs {floor:.0} q/s)", s / floor);
        (text, s >= floor)
    });
    push(
        "c=32 q/s ÷ floor 1/(1/hop + 1/direct)".into(),
        "≥ 1.00×",
        cells,
    );
    let p50 = |t| get(1, t).map_or(f64::NAN, |m| m.p50_us);
    let (hop, direct) = (p50(Target::Hop), p50(Target::Direct));
    let cells = both(&|t| {
        let above = p50(t) - hop - direct;
        let text = format!("{above:+.1} µs ({:.1} vs {hop:.1} + {direct:.1})", p50(t));
        (text, above <= 40.0)
    });
    push("c=1 p50 − (hop p50 + direct p50)".into(), "≤ +40 µs", cells);
    let cells = both(&|t| match get(32, t).and_then(|m| m.cpu_us_per_query) {
        Some(cpu) => (format!("{cpu:.1} µs/q"), cpu <= 20.0),
        None => ("not measured".into(), false),
    });
    push("c=32 sidecar CPU per query".into(), "≤ 20 µs/q", cells);
    let errors = |m: Option<&Measured>| match m {
        Some(m) => (m.errors.to_string(), m.errors == 0 && m.queries > 0),
        None => ("not run".to_owned(), false),
    };
    let [(p256, a), (p1000, b), (pbig, c)] = [
        errors(get(256, Target::Sidecar)),
        errors(get(1000, Target::Sidecar)),
        errors(Some(&big.load)),
    ];
    let [(l256, _), (l1000, _)] = [256, 1000].map(|c| errors(get(c, Target::Leased)));
    push(
        "errors at 256 / 1,000 / 10,000 clients".into(),
        "0 / 0 / 0",
        [
            format!("{p256} / {p1000} / {pbig}"),
            met(a && b && c),
            format!("{l256} / {l1000} / not run"),
            "—".into(),
        ],
    );
    out
}

/// The issue-14 targets as a table.
pub(crate) fn targets_table(rows: &[Vec<String>]) -> String {
    let header = [
        "measure (select)",
        "target",
        "pgsidecar pipelined",
        "met",
        "pgsidecar leased",
        "met",
    ];
    markdown(&header, rows, 2)
}

/// `n` with a comma between each group of three digits: 10000 is "10,000".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// How the pipelined figures were taken, and whether the binary knew the settings.
pub(crate) fn pipeline_note(pipelining: bool, sweep_secs: u64, big_secs: u64) -> String {
    let known = if pipelining {
        "The pgsidecar binary of this run knows --pipeline-connections: \"pipelined\" is its \
         default pipelined path and \"leased\" runs with PGSIDECAR_PIPELINE_CONNECTIONS=0."
            .to_owned()
    } else {
        "The pgsidecar binary of this run does not know --pipeline-connections: it ignored \
         PGSIDECAR_PIPELINE_*, so \"pipelined\", the 10,000-client run and every sweep cell \
         ran the leased path, the same as \"leased\"."
            .to_owned()
    };
    format!(
        "{known} The {clients}-client run: a fresh pgsidecar with the defaults, {clients} workers on \
         {} channels, {big_secs} s measured after the {} s warm-up; peak RSS is VmHWM of \
         /proc/<pid>/status read right after it (since the process started). The sweep: \
         select c=32, a fresh pgsidecar per cell with PGSIDECAR_PIPELINE_CONNECTIONS and \
         PGSIDECAR_PIPELINE_DEPTH set, {sweep_secs} s measured per cell (shorter than the \
         table's runs).",
        channels_for(BIG),
        WARMUP.as_secs(),
        clients = grouped(BIG),
    )
}

/// The earlier targets, each with the figures it was judged on: [target, measured, met].
pub(crate) fn checks(runs: &[Measured], [on, off]: &[Measured; 2]) -> Vec<[String; 3]> {
    let get = |w: Workload, c: usize, t: Target| {
        let same = |m: &&Measured| m.workload == w.name() && m.concurrency == c;
        runs.iter()
            .filter(same)
            .find(|m| m.target == t.name())
            .expect("run")
    };
    let vs = |a: f64, b: f64| format!("{:.2}× ({a:.0} vs {b:.0} q/s)", a / b);
    let met = |ok: bool| if ok { "met" } else { "NOT met" }.to_owned();
    let mut out = Vec::new();
    for w in [Workload::Select, Workload::Mix] {
        let name = w.name();
        let s = get(w, 32, Target::Sidecar).qps;
        let (d, b) = (
            get(w, 32, Target::Direct).qps,
            get(w, 32, Target::Bouncer).qps,
        );
        let target = format!("{name}: c=32 pgsidecar ≥ 1.2× PgBouncer");
        out.push([target, vs(s, b), met(s >= 1.2 * b)]);
        out.push([
            format!("{name}: c=32 pgsidecar ≥ 0.6× direct"),
            vs(s, d),
            met(s >= 0.6 * d),
        ]);
        let hop = get(w, 32, Target::Hop).qps;
        let floor = 1.0 / (1.0 / hop + 1.0 / d);
        out.push([
            format!("{name}: c=32 pgsidecar ≥ 1.0× the additive floor (hop + direct)"),
            vs(s, floor),
            met(s >= floor),
        ]);
        let (d, s) = (
            get(w, 1, Target::Direct).p50_us,
            get(w, 1, Target::Sidecar).p50_us,
        );
        let measured = format!("{:+.1} µs ({s:.1} vs {d:.1} µs)", s - d);
        let target = format!("{name}: c=1 pgsidecar p50 ≤ direct p50 + 80 µs");
        out.push([target, measured, met(s - d <= 80.0)]);
    }
    let target = "statement cache on ≥ 1.5× off (select, c=32)".to_owned();
    out.push([target, vs(on.qps, off.qps), met(on.qps >= 1.5 * off.qps)]);
    let sidecar = runs.iter().filter(|m| m.target == Target::Sidecar.name());
    let cpu = sidecar.filter_map(|m| Some((m.cpu_us_per_query?, m.workload, m.concurrency)));
    let worst = cpu.max_by(|a, b| a.0.total_cmp(&b.0));
    let measured = worst.map_or("not measured".into(), |(c, w, n)| {
        format!("{c:.1} µs ({w} c={n})")
    });
    let target = "pgsidecar CPU ≤ 20 µs per query (worst run of the table)".to_owned();
    out.push([
        target,
        measured,
        met(worst.is_some_and(|(c, ..)| c <= 20.0)),
    ]);
    let at256 = runs
        .iter()
        .filter(|m| m.target == Target::Sidecar.name() && m.concurrency == 256);
    let (errors, queries) = at256.fold((0, 0), |(e, q), m| (e + m.errors, q + m.queries));
    let measured = format!("{errors} errors in {queries} queries (both workloads)");
    let target = "256 concurrent pgsidecar clients, zero errors".to_owned();
    out.push([target, measured, met(errors == 0 && queries > 0)]);
    out
}

pub(crate) const HEADER: [&str; 11] = [
    "workload",
    "conc",
    "target",
    "q/s",
    "p50 µs",
    "p99 µs",
    "×direct",
    "×pgbouncer",
    "×floor",
    "errors",
    "proxy CPU µs/q",
];

/// The runs beside the main table.
pub(crate) struct Extras {
    /// Statement cache on, off (select c=32).
    pub(crate) cache: [Measured; 2],
    /// One worker per core (select c=32).
    pub(crate) threads: Measured,
    /// Session hygiene modes, with their direct and PgBouncer runs.
    pub(crate) modes: Vec<Measured>,
    /// DDL during a load run.
    pub(crate) ddl: DdlRun,
    /// The 10,000-client run and its measured seconds.
    pub(crate) big: BigRun,
    pub(crate) big_secs: u64,
    /// The pipeline sweep and its measured seconds per cell.
    pub(crate) sweep: Vec<SweepRun>,
    pub(crate) sweep_secs: u64,
    /// Whether the binary knows the PGSIDECAR_PIPELINE_* settings.
    pub(crate) pipelining: bool,
}

/// Prints the table, the extras and the targets; writes the JSON and Markdown reports.
pub(crate) fn report(
    secs: u64,
    runs: Vec<Measured>,
    pgbench: Vec<PgbenchRun>,
    more: Extras,
    [pg_version, bouncer_version]: [String; 2],
    [loadavg, loadavg_end]: [String; 2],
    wall_secs: u64,
) {
    let Extras {
        cache,
        threads,
        modes,
        ddl,
        big,
        big_secs,
        sweep,
        sweep_secs,
        pipelining,
    } = more;
    let results = markdown(&HEADER, &table(&runs, &pgbench), 3) + &error_lines(&runs);
    let session = markdown(&HEADER, &table(&modes, &[]), 3) + &error_lines(&modes);
    let big_md = big_table(&big);
    let sweep_md = sweep_table(&sweep, &runs);
    let pipeline_rows = pipeline_checks(&runs, &big);
    let pipeline_targets = targets_table(&pipeline_rows);
    let note = pipeline_note(pipelining, sweep_secs, big_secs);
    let load = format!(
        "Load (1, 5, 15 min): {loadavg} at the start, {loadavg_end} at the end; wall time \
         {wall_secs} s"
    );
    let [on, off] = &cache;
    let cpu = |m: &Measured| m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
    let d = &ddl.load;
    let mut extras = vec![
        format!(
            "Statement cache, select c=32: on {:.0} q/s, off {:.0} q/s, {:.2}× (errors {} / {}; \
             pgsidecar cache hits/misses/invalidations on {:?}, off {:?})",
            on.qps,
            off.qps,
            on.qps / off.qps,
            on.errors,
            off.errors,
            on.sidecar_cache,
            off.sidecar_cache
        ),
        format!(
            "Runtime, select c=32: one thread (the default) {:.0} q/s at {} pgsidecar CPU µs/q; \
             one worker per core (`--worker-threads 0`) {:.0} q/s at {} µs/q (errors {} / {})",
            on.qps,
            cpu(on),
            threads.qps,
            cpu(&threads),
            on.errors,
            threads.errors
        ),
        format!(
            "DDL during a pgsidecar load run (SELECT *, c=32): {} client-visible errors in {} \
             queries ({:.0} q/s, p99 {:.1} µs; cache hits/misses/invalidations {:?})",
            d.errors, d.queries, d.qps, d.p99_us, d.sidecar_cache
        ),
    ];
    extras.extend(
        ddl.statements
            .iter()
            .map(|(sql, outcome)| format!("`{sql}`: {outcome}")),
    );
    extras.extend(d.error_samples.iter().map(|e| format!("client error: {e}")));
    let extras: String = extras.iter().map(|e| format!("- {e}\n")).collect();
    let checks = checks(&runs, &cache);
    let rows: Vec<Vec<String>> = checks.iter().map(|c| c.to_vec()).collect();
    let targets = markdown(&["target", "measured", "met"], &rows, 3);
    println!(
        "\n{results}\n{session}\n{big_md}\n{sweep_md}\n{pipeline_targets}\n{note}\n\n{extras}\n\
         {targets}\n{load}"
    );

    let command = match std::env::var("BENCH_SECONDS") {
        Ok(v) => format!("BENCH_SECONDS={v} cargo bench --bench compare"),
        Err(_) => "cargo bench --bench compare".to_owned(),
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let proc_field = |file: &str, key: &str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut pairs = text.lines().filter_map(|l| l.split_once(':'));
        let value = pairs
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned());
        value.unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = proc_field("/proc/cpuinfo", "model name");
    let mem = proc_field("/proc/meminfo", "MemTotal");
    let settings = format!(
        "every run: {}s warm-up, then {secs} s measured. Backend pool {POOL} for both PgBouncer \
         (transaction mode, default_pool_size = min_pool_size = {POOL}) and pgsidecar \
         (--pool-min = --pool-max = {POOL}, --failover-pool-min 0, other settings default; \
         \"leased\" adds {PIPELINE_CONNECTIONS}=0). gRPC workers share max(min(concurrency, \
         {MAX_CHANNELS}), concurrency / {STREAMS_PER_CHANNEL}) channels; direct and PgBouncer \
         workers hold one connection each (PgBouncer max_client_conn {BOUNCER_MAX_CLIENTS}); \
         direct runs up to c={DIRECT_MAX}. One tokio multi-thread load generator in \
         the bench process; aid uniform in 1..={ACCOUNTS}. Latency is client-side per \
         operation; errors include the warm-up, and count every failed attempt; a worker told \
         to retry later (gRPC RetryInfo) pauses that long, at most {} ms, before its next one. \
         Proxy CPU = utime+stime of the PgBouncer or \
         pgsidecar process over the measured part / successful queries (CLK_TCK {}).",
        WARMUP.as_secs(),
        MAX_RETRY_PAUSE.as_millis(),
        CLK_TCK.get().expect("CLK_TCK")
    );
    let met = |[t, m, ok]: &[String; 3]| serde_json::json!({"target": t, "measured": m, "met": ok == "met"});
    let targets_json: Vec<_> = checks.iter().map(met).collect();
    let pipeline_json: Vec<_> = pipeline_rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "measure": r[0], "target": r[1],
                "pipelined": { "measured": r[2], "met": r[3] == "met" },
                "leased": { "measured": r[4], "met": r[5] == "met" },
            })
        })
        .collect();
    let json = serde_json::json!({
        "date": date, "command": command, "settings": settings, "seconds": secs, "pool": POOL,
        "machine": { "nproc": nproc, "cpu": cpu, "memory": mem },
        "versions": { "postgresql": pg_version, "pgbouncer": bouncer_version },
        "loadavg_at_start": loadavg, "loadavg_at_end": loadavg_end, "wall_seconds": wall_secs,
        "pipeline_settings_known": pipelining,
        "ten_thousand_clients": big, "ten_thousand_seconds": big_secs,
        "pipeline_sweep": sweep, "pipeline_sweep_seconds": sweep_secs,
        "pipeline_targets": pipeline_json,
        "runs": runs, "pgbench": pgbench, "targets": targets_json, "ddl_during_load": ddl,
        "statement_cache": { "on": on, "off": off, "ratio": on.qps / off.qps },
        "runtime": { "one_thread": on, "per_core": threads, "ratio": on.qps / threads.qps },
        "session_modes": modes,
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = serde_json::to_string_pretty(&json).expect("json") + "\n";
    std::fs::write(root.join("target/bench/compare.json"), body).expect("write compare.json");

    let doc = format!(
        "# Benchmarks\n\nWritten by `benches/compare/main.rs` (see `benches/README.md`); every \
         figure comes from the one run described here. Rerun the command to refresh; do not \
         edit by hand.\n\n## Run\n\n- Command: `{command}`\n- Date: {date}\n- Machine: {nproc} \
         CPUs ({cpu}), {mem} memory; load average (1, 5, 15 min) at the start: {loadavg}, at \
         the end: {loadavg_end}; wall time of the run {wall_secs} s\n- PostgreSQL: {pg_version}\n- PgBouncer: {bouncer_version}\n\
         - Settings: {settings}\n\n## Results\n\nRatios are throughput over the direct or \
         PgBouncer run of the same workload and concurrency; \"—\" where the reference was not \
         run (direct, and so the floor, only up to c={DIRECT_MAX}). \"pgsidecar pipelined\" is \
         pgsidecar with its defaults, \"pgsidecar leased\" a second process with \
         {PIPELINE_CONNECTIONS}=0, measured back to back. The pgbench rows are pgbench's own \
         figures for the select workload (`-S`, one select per transaction); pgbench reports \
         only the average latency, shown in the p50 column as `avg`.\n\n{results}\n\
         ## Session hygiene modes\n\nSelect, c=32, back to back: pgsidecar by default, with \
         `--read-only` and with `--reset-always`.\n\n{session}\n\
         ## 10,000 clients\n\n{big_md}\n## Pipeline sweep\n\nSelect, c=32, {sweep_secs} s \
         measured per cell (the table's runs: {secs} s).\n\n{sweep_md}\n\
         ## Targets (issue 14, pipelined path)\n\n{pipeline_targets}\n{note}\n\n\
         ## Extras\n\n{extras}\n## Earlier targets\n\n{targets}\n{load}\n"
    );
    std::fs::create_dir_all(root.join("docs")).expect("mkdir docs");
    std::fs::write(root.join("docs/BENCHMARKS.md"), doc).expect("write docs/BENCHMARKS.md");
    eprintln!(
        "compare: wrote target/bench/compare.json, docs/BENCHMARKS.md; pgsidecar log in target/bench/pgsidecar.log"
    );
}
