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

/// The table's rows: each run with its ratios; pgbench's figures after the select rows.
pub(crate) fn table(runs: &[Measured], pgbench_runs: &[PgbenchRun]) -> Vec<Vec<String>> {
    let qps_of = |m: &Measured, target: Target| {
        let same = |r: &&Measured| r.workload == m.workload && r.concurrency == m.concurrency;
        let found = runs.iter().filter(same).find(|r| r.target == target.name());
        found.map_or(f64::NAN, |r| r.qps)
    };
    let mut rows = Vec::new();
    for m in runs {
        let (direct, bouncer) = (qps_of(m, Target::Direct), qps_of(m, Target::Bouncer));
        // The additive floor: the hop and the direct query one after the other on the same
        // cores, 1 / (1/hop + 1/direct).
        let floor = 1.0 / (1.0 / qps_of(m, Target::Hop) + 1.0 / direct);
        let to_floor = format!("{:.2}", m.qps / floor);
        let cpu = m.cpu_us_per_query.map_or("—".into(), |c| format!("{c:.1}"));
        let (p50, p99) = (format!("{:.1}", m.p50_us), format!("{:.1}", m.p99_us));
        let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
        let ratios = [m.qps / direct, m.qps / bouncer].map(|r| format!("{r:.2}"));
        let [to_direct, to_bouncer] = ratios;
        let (qps, errors) = (format!("{:.0}", m.qps), m.errors.to_string());
        let target = m.target.to_owned();
        rows.push(vec![
            label, conc, target, qps, p50, p99, to_direct, to_bouncer, to_floor, errors, cpu,
        ]);
        if m.workload != "select" || m.target != "pgsidecar" {
            continue;
        }
        for p in pgbench_runs
            .iter()
            .filter(|p| p.concurrency == m.concurrency)
        {
            let (label, conc) = (m.workload.to_owned(), m.concurrency.to_string());
            let target = format!("pgbench {} -M {}", p.via, p.mode);
            let ratios = [p.tps / direct, p.tps / bouncer, p.tps / floor];
            let [to_direct, to_bouncer, to_floor] = ratios.map(|r| format!("{r:.2}"));
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

/// The targets, each with the figures it was judged on: [target, measured, met].
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
    let sidecar = runs.iter().filter(|m| m.target == "pgsidecar");
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
        .filter(|m| m.target == "pgsidecar" && m.concurrency == 256);
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
}

/// Prints the table, the extras and the targets; writes the JSON and Markdown reports.
pub(crate) fn report(
    secs: u64,
    runs: Vec<Measured>,
    pgbench: Vec<PgbenchRun>,
    more: Extras,
    [pg_version, bouncer_version, loadavg]: [String; 3],
) {
    let Extras {
        cache,
        threads,
        modes,
        ddl,
    } = more;
    let results = markdown(&HEADER, &table(&runs, &pgbench), 3);
    let session = markdown(&HEADER, &table(&modes, &[]), 3);
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
    println!("\n{results}\n{session}\n{extras}\n{targets}");

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
         (--pool-min = --pool-max = {POOL}, --failover-pool-min 0, other settings default). \
         pgsidecar workers share min(concurrency, {MAX_CHANNELS}) gRPC channels; direct and \
         PgBouncer workers hold one connection each. One tokio multi-thread load generator in \
         the bench process; aid uniform in 1..={ACCOUNTS}. Latency is client-side per \
         operation; errors include the warm-up. Proxy CPU = utime+stime of the PgBouncer or \
         pgsidecar process over the measured part / successful queries (CLK_TCK {}).",
        WARMUP.as_secs(),
        CLK_TCK.get().expect("CLK_TCK")
    );
    let met = |[t, m, ok]: &[String; 3]| serde_json::json!({"target": t, "measured": m, "met": ok == "met"});
    let targets_json: Vec<_> = checks.iter().map(met).collect();
    let json = serde_json::json!({
        "date": date, "command": command, "settings": settings, "seconds": secs, "pool": POOL,
        "machine": { "nproc": nproc, "cpu": cpu, "memory": mem },
        "versions": { "postgresql": pg_version, "pgbouncer": bouncer_version },
        "loadavg_at_start": loadavg,
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
         CPUs ({cpu}), {mem} memory; load average (1, 5, 15 min) at the start: {loadavg}\n- PostgreSQL: {pg_version}\n- PgBouncer: {bouncer_version}\n\
         - Settings: {settings}\n\n## Results\n\nRatios are throughput over the direct or \
         PgBouncer run of the same workload and concurrency. The pgbench rows are pgbench's own \
         figures for the select workload (`-S`, one select per transaction); pgbench reports \
         only the average latency, shown in the p50 column as `avg`.\n\n{results}\n\
         ## Session hygiene modes\n\nSelect, c=32, back to back: pgsidecar by default, with \
         `--read-only` and with `--reset-always`.\n\n{session}\n\
         ## Extras\n\n{extras}\n## Targets\n\n{targets}"
    );
    std::fs::create_dir_all(root.join("docs")).expect("mkdir docs");
    std::fs::write(root.join("docs/BENCHMARKS.md"), doc).expect("write docs/BENCHMARKS.md");
    eprintln!(
        "compare: wrote target/bench/compare.json, docs/BENCHMARKS.md; pgsidecar log in target/bench/pgsidecar.log"
    );
}
