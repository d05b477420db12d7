//! [`ServicesReport`] as markdown tables for docs/benchmarks.md: medians
//! and p90s, and each figure's ratio to what it is held against.

use std::fmt::Write as _;
use std::time::Duration;

use super::defs::{ENTRY, SERVER};
use super::{Hold, Path, Series, ServicesReport, Throughput};
use crate::bench::{median, percentile};

impl Path {
    fn label(self) -> String {
        match self {
            Path::Direct => "direct to the container".into(),
            Path::Haproxy => "HAProxy (TCP mode, on the host)".into(),
            Path::Local => format!("mesh, local agent ({SERVER})"),
            Path::Remote => format!("mesh, remote agent ({ENTRY} -> {SERVER} over QUIC)"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Median and p90 of a series.
fn mid_p90(samples: &[Duration]) -> (Duration, Duration) {
    let mut v = samples.to_vec();
    (median(&mut v), percentile(&mut v, 90))
}

/// The median of the series measured direct to the container, if any.
fn direct_median(series: &[Series]) -> Option<Duration> {
    series
        .iter()
        .find(|s| s.path == Path::Direct)
        .map(|s| mid_p90(&s.samples).0)
}

impl ServicesReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.first_byte_tables(&mut out);
        self.throughput_table(&mut out);
        self.persistent_table(&mut out);
        self.memory_tables(&mut out);
        let _ = writeln!(
            out,
            "{}; docker CLI round trip (`docker version`, median of 5): {:.0} ms",
            self.haproxy,
            ms(self.cli_round_trip)
        );
        out
    }

    fn first_byte_tables(&self, out: &mut String) {
        let direct = direct_median(&self.first_byte);
        let _ = writeln!(
            out,
            "Time to first byte, warm and pool ({} samples each; connect to the first echoed byte of 32):\n\n| connection | path | median (ms) | p90 (ms) | median over direct (ms) |\n|---|---|---:|---:|---:|",
            self.first_byte.first().map_or(0, |s| s.samples.len())
        );
        for s in &self.first_byte {
            let over = |m: Duration| match (s.path, direct) {
                (Path::Direct, _) | (_, None) => "-".to_owned(),
                (_, Some(d)) => format!("{:+.2}", ms(m) - ms(d)),
            };
            series_row(out, s, over);
        }
        let raw = direct_median(&self.cold);
        let _ = writeln!(
            out,
            "\nTime to first byte, cold ({} samples each; raw Docker: from `docker run` to the first echoed byte):\n\n| connection | path | median (ms) | p90 (ms) | median / raw Docker's |\n|---|---|---:|---:|---:|",
            self.cold.first().map_or(0, |s| s.samples.len())
        );
        for s in &self.cold {
            let ratio = |m: Duration| match raw {
                Some(r) if !r.is_zero() => format!("{:.2}", m.as_secs_f64() / r.as_secs_f64()),
                _ => "-".to_owned(),
            };
            series_row(out, s, ratio);
        }
        out.push('\n');
    }

    fn throughput_table(&self, out: &mut String) {
        let mb_s = |t: &Throughput| {
            let rates: Vec<f64> = t
                .transfers
                .iter()
                .map(|d| self.transfer_bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6)
                .collect();
            (median_f64(&rates), rates)
        };
        let rps = |t: &Throughput| {
            let rates: Vec<f64> = t
                .request_runs
                .iter()
                .map(|d| self.requests as f64 / d.as_secs_f64().max(1e-9))
                .collect();
            (median_f64(&rates), rates)
        };
        let of = |path| self.throughput.iter().find(|t| t.path == path);
        let (haproxy, direct) = (of(Path::Haproxy), of(Path::Direct));
        let _ = writeln!(
            out,
            "Throughput ({} runs; each run one transfer of {} MiB from a `source` instance, then {} short requests, {} in flight, each a new connection with 64 bytes echoed; MB = 10^6 bytes):\n\n| path | transfer MB/s, median | runs | / HAProxy | / direct | requests/s, median | runs | / HAProxy | / direct | request median (ms) | request p90 (ms) | forwarder CPU per GB moved (s) | forwarder CPU per request (µs) |\n|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
            self.throughput.first().map_or(0, |t| t.transfers.len()),
            self.transfer_bytes >> 20,
            self.requests,
            self.concurrency,
        );
        for t in &self.throughput {
            let (m, runs) = mb_s(t);
            let (r, r_runs) = rps(t);
            let ratio = |mine: f64,
                         other: Option<&Throughput>,
                         f: &dyn Fn(&Throughput) -> (f64, Vec<f64>)| {
                other.map_or("-".to_owned(), |o| {
                    format!("{:.2}", mine / f(o).0.max(1e-9))
                })
            };
            let (p50, p90) = mid_p90(&t.latencies);
            let (per_gb, per_request) = if t.path == Path::Direct {
                ("-".to_owned(), "-".to_owned())
            } else {
                let gb = (self.transfer_bytes * t.transfers.len() as u64) as f64 / 1e9;
                let n = (self.requests * t.request_runs.len()) as f64;
                (
                    format!("{:.2}", t.transfer_cpu.as_secs_f64() / gb.max(1e-9)),
                    format!("{:.0}", t.request_cpu.as_secs_f64() * 1e6 / n.max(1.0)),
                )
            };
            let _ = writeln!(
                out,
                "| {} | {m:.0} | {} | {} | {} | {r:.0} | {} | {} | {} | {:.2} | {:.2} | {per_gb} | {per_request} |",
                t.path.label(),
                list(&runs),
                ratio(m, haproxy, &mb_s),
                ratio(m, direct, &mb_s),
                list(&r_runs),
                ratio(r, haproxy, &rps),
                ratio(r, direct, &rps),
                ms(p50),
                ms(p90),
            );
        }
        out.push('\n');
    }

    /// Small requests on persistent connections: requests/s per path, its
    /// ratio to HAProxy's and the forwarders' CPU per request.
    fn persistent_table(&self, out: &mut String) {
        let per_run = (self.persistent_conns * self.exchanges) as f64;
        let rps = |t: &Throughput| {
            let rates: Vec<f64> = t
                .exchange_runs
                .iter()
                .map(|d| per_run / d.as_secs_f64().max(1e-9))
                .collect();
            (median_f64(&rates), rates)
        };
        let base = |path| {
            self.throughput
                .iter()
                .find(|t| t.path == path)
                .map(|t| rps(t).0)
        };
        let (haproxy, direct) = (base(Path::Haproxy), base(Path::Direct));
        let _ = writeln!(
            out,
            "Small requests on persistent connections ({} runs; each run {} connections opened first, then {} exchanges on each, all connections at once, 64 bytes echoed per exchange):\n\n| path | requests/s, median | runs | / HAProxy | / direct | forwarder CPU per request (µs) |\n|---|---:|---|---:|---:|---:|",
            self.throughput.first().map_or(0, |t| t.exchange_runs.len()),
            self.persistent_conns,
            self.exchanges,
        );
        for t in &self.throughput {
            let (r, runs) = rps(t);
            let ratio =
                |of: Option<f64>| of.map_or("-".to_owned(), |o| format!("{:.2}", r / o.max(1e-9)));
            let cpu = if t.path == Path::Direct {
                "-".to_owned()
            } else {
                let n = per_run * t.exchange_runs.len() as f64;
                format!("{:.1}", t.exchange_cpu.as_secs_f64() * 1e6 / n.max(1.0))
            };
            let _ = writeln!(
                out,
                "| {} | {r:.0} | {} | {} | {} | {cpu} |",
                t.path.label(),
                list(&runs),
                ratio(haproxy),
                ratio(direct),
            );
        }
        out.push('\n');
    }

    fn memory_tables(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Agent memory (meshd's VmRSS, MiB):\n\n| moment | {ENTRY} (entry) | {SERVER} (runs the containers) |\n|---|---:|---:|"
        );
        for s in &self.snapshots {
            let at = |node: &str| {
                s.rss_kib
                    .iter()
                    .find(|(n, _)| n == node)
                    .map_or("-".to_owned(), |(_, kib)| format!("{:.1}", mib(*kib)))
            };
            let _ = writeln!(out, "| {} | {} | {} |", s.moment, at(ENTRY), at(SERVER));
        }
        let _ = writeln!(
            out,
            "\nHeld connections to the echo pool (each echoed once, then left open):\n\n| path | asked | held | {ENTRY} before -> holding (MiB) | {SERVER} before -> holding (MiB) | per connection, {ENTRY} / {SERVER} (KiB) | open files holding, {ENTRY} / {SERVER} | why fewer than asked |\n|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for h in &self.holds {
            hold_row(out, h);
        }
        out.push('\n');
    }
}

fn series_row(out: &mut String, s: &Series, against: impl Fn(Duration) -> String) {
    let (m, p90) = mid_p90(&s.samples);
    let _ = writeln!(
        out,
        "| {} | {} | {:.2} | {:.2} | {} |",
        s.what,
        s.path.label(),
        ms(m),
        ms(p90),
        against(m)
    );
}

fn hold_row(out: &mut String, h: &Hold) {
    let find = |list: &[(String, super::ProcUse)], node: &str| {
        list.iter().find(|(n, _)| n == node).map(|(_, u)| *u)
    };
    // A local connection does not touch the entry agent.
    let involved = |node: &str| h.path != Path::Local || node == SERVER;
    let at = |node: &str| match (find(&h.before, node), find(&h.holding, node)) {
        (Some(b), Some(a)) => (
            format!("{:.1} -> {:.1}", mib(b.rss_kib), mib(a.rss_kib)),
            if h.held == 0 || !involved(node) {
                "-".to_owned()
            } else {
                format!(
                    "{:.1}",
                    (a.rss_kib as f64 - b.rss_kib as f64) / h.held as f64
                )
            },
            a.fds.to_string(),
        ),
        _ => ("-".into(), "-".into(), "-".into()),
    };
    let (entry, server) = (at(ENTRY), at(SERVER));
    let why = if h.why_fewer.is_empty() {
        "-".to_owned()
    } else {
        h.why_fewer.join("; ")
    };
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |",
        h.path.label(),
        h.asked,
        h.held,
        entry.0,
        server.0,
        entry.1,
        server.1,
        entry.2,
        server.2,
        why.replace('|', "/"),
    );
}

fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::ProcUse;
    use super::super::Snapshot;
    use super::*;

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn usage(rss_kib: u64, fds: usize) -> ProcUse {
        ProcUse {
            rss_kib,
            fds,
            max_fds: 20_000,
        }
    }

    fn report() -> ServicesReport {
        let series = |what, path, v: &[u64]| Series {
            what,
            path,
            samples: v.iter().map(|n| ms_(*n)).collect(),
        };
        let run = |path, transfer: u64, requests: u64| Throughput {
            path,
            transfers: vec![ms_(transfer); 3],
            request_runs: vec![ms_(requests); 3],
            latencies: vec![ms_(2); 10],
            exchange_runs: vec![ms_(requests / 2); 3],
            transfer_cpu: ms_(600),
            request_cpu: ms_(300),
            exchange_cpu: ms_(500),
        };
        ServicesReport {
            first_byte: vec![
                series("ready container", Path::Direct, &[1, 1, 3]),
                series("warm per-connection", Path::Local, &[2, 4, 2]),
            ],
            cold: vec![
                series("raw docker run + connect", Path::Direct, &[400, 500, 600]),
                series("cold per-connection", Path::Remote, &[600, 750, 900]),
            ],
            throughput: vec![
                run(Path::Direct, 500, 1000),
                run(Path::Haproxy, 1000, 1000),
                run(Path::Remote, 2000, 4000),
            ],
            snapshots: vec![Snapshot {
                moment: "idle".into(),
                rss_kib: vec![(ENTRY.into(), 10_240), (SERVER.into(), 20_480)],
            }],
            holds: vec![Hold {
                path: Path::Remote,
                asked: 100,
                tried: 100,
                held: 50,
                why_fewer: vec!["connection 51 of 100 failed".into()],
                before: vec![
                    (ENTRY.into(), usage(10_240, 10)),
                    (SERVER.into(), usage(20_480, 20)),
                ],
                holding: vec![
                    (ENTRY.into(), usage(11_240, 60)),
                    (SERVER.into(), usage(20_980, 70)),
                ],
            }],
            transfer_bytes: 100_000_000,
            requests: 1000,
            concurrency: 16,
            persistent_conns: 10,
            exchanges: 100,
            cli_round_trip: ms_(22),
            haproxy: "HAProxy version 2.6.12".into(),
        }
    }

    #[test]
    fn the_persistent_row_has_rates_ratios_and_cpu() {
        let md = report().markdown();
        // 1000 exchanges in 0.5 s (direct, HAProxy) and 2 s (remote); the
        // remote's 0.5 s of CPU over 3000 exchanges.
        assert!(
            md.contains("| direct to the container | 2000 | 2000, 2000, 2000 | 1.00 | 1.00 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| 500 | 500, 500, 500 | 0.25 | 0.25 | 166.7 |"),
            "{md}"
        );
    }

    #[test]
    fn tables_carry_medians_p90s_and_ratios() {
        let md = report().markdown();
        // Warm local: median 2 ms, p90 4 ms, 1 ms over direct's median.
        assert!(
            md.contains("| warm per-connection | mesh, local agent (n2) | 2.00 | 4.00 | +1.00 |"),
            "{md}"
        );
        // Cold remote: 750 / 500.
        assert!(md.contains("| 750.00 | 900.00 | 1.50 |"), "{md}");
        // 100 MB in 0.5 s is 200 MB/s, twice HAProxy's; 1000 requests in 4 s.
        assert!(
            md.contains("| direct to the container | 200 | 200, 200, 200 | 2.00 | 1.00 | 1000 |"),
            "{md}"
        );
        assert!(
            md.contains("| 50 | 50, 50, 50 | 0.50 | 0.25 | 250 |"),
            "{md}"
        );
        // 0.6 s for 3 x 100 MB; 0.3 s for 3 x 1000 requests.
        assert!(md.contains("| 2.00 | 2.00 | 2.00 | 100 |\n"), "{md}");
        assert!(md.contains("| 2.00 | 2.00 | - | - |\n"), "{md}");
        assert!(md.contains("| idle | 10.0 | 20.0 |"), "{md}");
        // (11240 - 10240) / 50 and (20980 - 20480) / 50 KiB per connection.
        assert!(
            md.contains("| 100 | 50 | 10.0 -> 11.0 | 20.0 -> 20.5 | 20.0 / 10.0 | 60 / 70 | connection 51 of 100 failed |"),
            "{md}"
        );
        assert!(md.contains("median of 5): 22 ms"), "{md}");
    }
}
