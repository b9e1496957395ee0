//! A userspace stand-in for `tc netem delay`, for kernels built without `sch_netem`: a relay in a
//! namespace of the test's LAN that forwards TCP connections and UDP datagrams (QUIC) to the
//! aggregator, holding every chunk and datagram for a fixed delay in each direction. Loss is left
//! to the kernel (an nftables `numgen` rule, see `netns.rs`).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often blocked reads and the accept loop look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

type Job = Box<dyn FnOnce() + Send>;

/// A running relay; its threads stop when it is dropped.
pub struct DelayRelay {
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What every thread of a relay shares.
#[derive(Clone)]
struct Ctx {
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    delay: Duration,
}

impl DelayRelay {
    /// Starts inside network namespace `netns`: accepts TCP and UDP on `listen` and forwards to
    /// `upstream`, `delay` later in each direction.
    pub fn start(netns: &str, listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> DelayRelay {
        let ctx = Ctx { stop: Arc::new(AtomicBool::new(false)), forwarded: Arc::new(AtomicU64::new(0)), delay };
        let (ready, bound) = mpsc::channel();
        let path = format!("/run/netns/{netns}");
        let thread = thread::spawn({
            let ctx = ctx.clone();
            move || {
                // Only this thread (and the threads it starts) enters the namespace: every socket
                // of the relay is made in it.
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let tcp = TcpListener::bind(listen).unwrap();
                tcp.set_nonblocking(true).unwrap();
                let udp = UdpSocket::bind(listen).unwrap();
                udp.set_read_timeout(Some(TICK)).unwrap();
                ready.send(()).unwrap();
                let datagrams = thread::spawn({
                    let ctx = ctx.clone();
                    move || relay_datagrams(&ctx, udp, upstream)
                });
                while !ctx.stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((client, _)) => relay_connection(&ctx, client, upstream),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
                        Err(e) => panic!("relay accept: {e}"),
                    }
                }
                datagrams.join().unwrap();
            }
        });
        bound.recv_timeout(Duration::from_secs(10)).expect("the delay relay did not start");
        DelayRelay { stop: ctx.stop, forwarded: ctx.forwarded, thread: Some(thread) }
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A thread that runs each job when it is due, in the order given (a constant delay keeps the
/// due times in that order too). It ends when every sender is gone.
fn delay_line() -> mpsc::Sender<(Instant, Job)> {
    let (tx, rx) = mpsc::channel::<(Instant, Job)>();
    thread::spawn(move || {
        for (due, job) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            job();
        }
    });
    tx
}

/// One TCP connection: a connection to `upstream`, and each direction copied through its own
/// delay line.
fn relay_connection(ctx: &Ctx, client: TcpStream, upstream: SocketAddr) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (client, server) = (Arc::new(client), Arc::new(server));
    for (from, to) in [(client.clone(), server.clone()), (server, client)] {
        let ctx = ctx.clone();
        thread::spawn(move || copy_delayed(&ctx, &from, to));
    }
}

fn copy_delayed(ctx: &Ctx, from: &TcpStream, to: Arc<TcpStream>) {
    from.set_read_timeout(Some(TICK)).unwrap();
    let line = delay_line();
    let mut buf = vec![0u8; 64 * 1024];
    while !ctx.stop.load(Ordering::Relaxed) {
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => 0,
        };
        let due = Instant::now() + ctx.delay;
        let to = to.clone();
        if n == 0 {
            let _ = line.send((due, Box::new(move || drop(to.shutdown(Shutdown::Write)))));
            return;
        }
        ctx.forwarded.fetch_add(n as u64, Ordering::Relaxed);
        let chunk = buf[..n].to_vec();
        let _ = line.send((due, Box::new(move || drop((&*to).write_all(&chunk)))));
    }
}

/// UDP: one socket towards `upstream` per client address, each answered through the front
/// socket; datagrams both ways go through delay lines.
fn relay_datagrams(ctx: &Ctx, front: UdpSocket, upstream: SocketAddr) {
    let front = Arc::new(front);
    let line = delay_line();
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !ctx.stop.load(Ordering::Relaxed) {
        let (n, client) = match front.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("relay recv: {e}"),
        };
        let back = clients.entry(client).or_insert_with(|| {
            let back = UdpSocket::bind(SocketAddr::new(front.local_addr().unwrap().ip(), 0)).unwrap();
            back.connect(upstream).unwrap();
            back.set_read_timeout(Some(TICK)).unwrap();
            let back = Arc::new(back);
            let (ctx, back2, front) = (ctx.clone(), back.clone(), front.clone());
            thread::spawn(move || answers(&ctx, &back2, &front, client));
            back
        });
        ctx.forwarded.fetch_add(n as u64, Ordering::Relaxed);
        let (datagram, back) = (buf[..n].to_vec(), back.clone());
        let _ = line.send((Instant::now() + ctx.delay, Box::new(move || drop(back.send(&datagram)))));
    }
}

/// Datagrams from upstream to one client.
fn answers(ctx: &Ctx, back: &UdpSocket, front: &Arc<UdpSocket>, client: SocketAddr) {
    let line = delay_line();
    let mut buf = vec![0u8; 65536];
    while !ctx.stop.load(Ordering::Relaxed) {
        let n = match back.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused) =>
            {
                continue;
            }
            Err(e) => panic!("relay recv: {e}"),
        };
        ctx.forwarded.fetch_add(n as u64, Ordering::Relaxed);
        let (datagram, front) = (buf[..n].to_vec(), front.clone());
        let _ = line.send((Instant::now() + ctx.delay, Box::new(move || drop(front.send_to(&datagram, client)))));
    }
}
