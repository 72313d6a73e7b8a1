//! A node script driven over stdin and answering in JSON lines on stdout:
//! how the browser and JavaScript-client tests run what only Node or a
//! browser can.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// The script's stdout lines as they come, its stderr kept for failure
/// messages. Dropping it closes its stdin, on which the scripts close their
/// clients and browser and exit (a killed node would leave Chromium's
/// process group behind); one that does not within [`DEADLINE`] is killed.
pub struct Script {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Script {
    pub fn spawn(cmd: &mut Command) -> Script {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Script {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// What the script wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the script to exit, up to [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for node") {
                return status;
            }
            assert!(t.elapsed() < DEADLINE, "the script did not exit within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let t = Instant::now();
        while t.elapsed() < DEADLINE {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
