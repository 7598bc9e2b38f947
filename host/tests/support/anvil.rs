//! A real local chain for the tests: anvil, from the pinned npm package in
//! `tools/` (`make tools` installs it), on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// anvil's first dev account: unlocked, so `eth_sendTransaction` from it
/// needs no key.
pub const DEV_ACCOUNT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

/// Init code of a contract that stores 42 in slot 0; its runtime code
/// returns slot 0 for any call.
pub const INIT_CODE: &str = "0x602a600055600b8060106000396000f360005460005260206000f3";
/// The runtime code the init code deploys.
pub const RUNTIME_CODE: &str = "0x60005460005260206000f3";

/// Where `make tools` puts anvil.
pub fn anvil_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        path.exists(),
        "anvil is missing at {}: run `make tools` (npm ci --prefix tools)",
        path.display()
    );
    path
}

/// A running anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    pub addr: SocketAddr,
    pub chain_id: u64,
    /// anvil's stdout: it prints the name of every method it is asked.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Anvil {
    pub fn start(chain_id: u64) -> Anvil {
        let mut child = Command::new(anvil_path())
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id"])
            .arg(chain_id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let stdout = child.stdout.take().expect("anvil stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("anvil's address"),
            Err(_) => {
                let _ = child.kill();
                panic!("anvil did not start listening");
            }
        };
        Anvil {
            child,
            addr,
            chain_id,
            lines,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `--rpc` for this chain.
    pub fn rpc_flag(&self) -> String {
        format!("{}={}", self.chain_id, self.url())
    }

    /// `wasmatic up` in `dir` with `flags` on this chain, on a free port,
    /// polling the chain every 100ms: at the default second the chain tests
    /// would mostly wait.
    pub fn node(&self, dir: &Path, flags: &[&str]) -> super::Node {
        let rpc = self.rpc_flag();
        let mut args = vec!["--rpc", &rpc, "--chain-poll-interval", "100ms"];
        args.extend_from_slice(flags);
        super::up(dir, &args)
    }

    /// Calls anvil directly; returns the whole JSON-RPC answer.
    pub fn answer(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = super::request(
            self.addr,
            "POST",
            "/",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
        response.json()
    }

    /// Calls anvil directly; returns the result, failing on an error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let answer = self.answer(method, params);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// How many times anvil was asked `method` so far.
    pub fn asked(&self, method: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.trim() == method)
            .count()
    }

    /// The receipt of transaction `hash`, once mined: anvil answers
    /// `eth_sendTransaction` before its block is in place.
    pub fn receipt(&self, hash: &Value) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let receipt = self.call("eth_getTransactionReceipt", json!([hash]));
            if !receipt.is_null() {
                return receipt;
            }
            assert!(std::time::Instant::now() < deadline, "{hash} was not mined");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Deploys a contract from `init_code` and returns its address.
    pub fn deploy_code(&self, init_code: &str) -> String {
        let hash = self.call(
            "eth_sendTransaction",
            json!([{"from": DEV_ACCOUNT, "data": init_code, "gas": "0x30000"}]),
        );
        self.receipt(&hash)["contractAddress"]
            .as_str()
            .expect("contract address")
            .to_string()
    }

    /// Deploys the test contract and returns its address.
    pub fn deploy(&self) -> String {
        self.deploy_code(INIT_CODE)
    }

    /// Mines `n` blocks.
    pub fn mine(&self, n: u64) {
        self.call("anvil_mine", json!([format!("0x{n:x}")]));
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
