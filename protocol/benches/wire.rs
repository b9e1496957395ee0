//! `cargo bench -p protocol`: encode+sign and verify+decode throughput, and envelope overhead,
//! for a 1,000 × 10 soft-label submission in each encoding (one thread). `--quick` (after `--`)
//! shortens the timing budget; an unknown option is an error.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Parser;
use protocol::*;

/// `cargo bench -p protocol -- [OPTIONS]`
#[derive(Parser)]
#[command(name = "wire-bench", about = "Envelope overhead and encode/decode throughput per encoding")]
struct Args {
    /// A short timing budget: checks that the bench works; not for figures.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn probs(samples: usize, classes: usize) -> Vec<f32> {
    let mut state = 0x1234_5678u32;
    let mut v: Vec<f32> = (0..samples * classes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 10_000) as f32 + 1.0
        })
        .collect();
    for row in v.chunks_exact_mut(classes) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= s);
    }
    v
}

/// Runs `f` repeatedly for about `budget`, returns seconds per call (median of 5 batches).
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget / 10 {
        f();
        n += 1;
    }
    let per_batch = n.max(1);
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn main() {
    let args = Args::parse();
    let (samples, classes) = (1_000usize, 10usize);
    let p = probs(samples, classes);
    let id = Identity::from_seed([3; 32]).expect("key");
    let limits = Limits::default();
    let budget = Duration::from_millis(if args.quick { 200 } else { 1500 });
    println!("soft-label submission {samples} x {classes}, one thread");
    println!(
        "{:<6} {:>10} {:>10} {:>9} {:>16} {:>18} {:>18}",
        "enc", "payload B", "wire B", "overhead", "encode+sign MB/s", "verify+decode MB/s", "verify+decode µs"
    );
    for enc in Encoding::ALL {
        let msg = Message::Submission(Submission {
            federation: FederationId::new("bench").expect("fed"),
            round: 7,
            announcement: AnnouncementDigest([2; 32]),
            reference_set: ReferenceSetId([1; 32]),
            temperature: 3.0,
            local_samples: Some(1234),
            labels: SoftLabels::encode(&p, samples, classes, enc).expect("encode"),
            abstained: None,
        });
        let payload = enc.payload_bytes(samples, classes);
        let wire = SignedEnvelope::seal(&msg, &id).expect("seal").to_bytes().expect("bytes");
        let overhead = wire.len() - payload;
        // Encode+sign starts from the probabilities, as a node does.
        let enc_s = time_per_call(budget, || {
            let labels = SoftLabels::encode(black_box(&p), samples, classes, enc).expect("encode");
            let m = Message::Submission(Submission { labels, ..submission_of(&msg).clone() });
            black_box(SignedEnvelope::seal(&m, &id).expect("seal").to_bytes().expect("bytes"));
        });
        // Verify+decode ends with validated probabilities, as the aggregator needs them.
        let dec_s = time_per_call(budget, || {
            let env = SignedEnvelope::from_bytes(black_box(&wire), &limits).expect("env");
            let m = env.open(&id.id(), &limits).expect("open");
            black_box(submission_of(&m).labels.decode(&limits).expect("decode"));
        });
        let mb = |s: f64| payload as f64 / s / 1e6;
        println!(
            "{:<6} {:>10} {:>10} {:>8.2}% {:>16.1} {:>18.1} {:>18.1}",
            format!("{enc:?}"),
            payload,
            wire.len(),
            100.0 * overhead as f64 / payload as f64,
            mb(enc_s),
            mb(dec_s),
            dec_s * 1e6
        );
    }
    println!("targets: overhead < 5 % of payload; verify+decode >= 200 MB/s");
}

fn submission_of(m: &Message) -> &Submission {
    match m {
        Message::Submission(s) => s,
        _ => unreachable!("bench builds submissions only"),
    }
}
