//! A TCP gate in front of a test server: adapters give Remix the gate's address, and `close` makes
//! the server unreachable (connections refused, open ones cut mid-request) until `open`, on the same
//! port. Works for any TCP protocol, so every HTTP-based adapter (and later brokers) can use it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug)]
pub struct Gate {
    /// `127.0.0.1:port`: what the target connects to.
    pub addr: String,
    upstream: String,
    /// Both ends of every open connection, to cut them on `close`.
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accepting: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Gate {
    /// A gate on a free port, open, forwarding to `upstream` (`host:port`).
    ///
    /// It listens on 127.0.0.2 (loopback too, on Linux): while it is closed its port is free, and on
    /// 127.0.0.1 another test picking a free port (`free_addr`) could take it; nothing else binds
    /// 127.0.0.2, and connections to it leave from 127.0.0.1, so the port is there to take back.
    pub fn start(upstream: &str) -> Gate {
        let listener = TcpListener::bind("127.0.0.2:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .expect("bind the gate");
        let addr = listener.local_addr().unwrap().to_string();
        let mut gate =
            Gate { addr, upstream: upstream.to_owned(), connections: Arc::default(), accepting: None };
        gate.serve(listener);
        gate
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, upstream, connections) =
            (Arc::clone(&stop), self.upstream.clone(), Arc::clone(&self.connections));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, &upstream, &connections),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: connections are refused from now on.
        });
        self.accepting = Some((stop, thread));
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&mut self) {
        if let Some((stop, thread)) = self.accepting.take() {
            stop.store(true, Ordering::SeqCst);
            thread.join().unwrap();
        }
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again, on the same address.
    pub fn open(&mut self) {
        if self.accepting.is_some() {
            return;
        }
        let listener = crate::support::wait_for("the gate's port to be free again", || {
            TcpListener::bind(&self.addr).ok()
        });
        self.serve(listener);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects `client` to `upstream` and copies both ways on two threads.
fn forward(client: TcpStream, upstream: &str, connections: &Arc<Mutex<Vec<TcpStream>>>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = connections.lock().unwrap();
        open.retain(|s| s.peer_addr().is_ok());
        open.push(client.try_clone().unwrap());
        open.push(server.try_clone().unwrap());
    }
    for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    }
}
