//! A throwaway Azure Blob emulator (Microsoft's `azurite-blob`, installed by
//! `scripts/test-servers.sh`) on a free port in a temp dir, with one container; stopped on drop.
//! Remix reaches it as an account's blob endpoint (`http://host:port/devstoreaccount1`, the
//! emulator's path-style URL, as in a connection string's `BlobEndpoint`), with the emulator's
//! well-known account and key from the environment.

use super::object_store::test_bin;
use crate::support::{free_addr, wait_for};
use std::process::{Child, Command};

/// The emulator's well-known account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "remix";

#[derive(Debug)]
pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:port` (the service; the account's endpoint adds `/devstoreaccount1`).
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_addr().rsplit_once(':').unwrap().1.to_owned();
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new(test_bin("azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port, "--loose", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(d.join("data"))
            .current_dir(d)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start azurite-blob");
        let server = Azurite { child, endpoint: format!("http://127.0.0.1:{port}"), dir };
        let addr = format!("127.0.0.1:{port}");
        wait_for("azurite to listen", || std::net::TcpStream::connect(&addr).ok().map(drop));
        server.python(&format!(
            "import time\nfor i in range(300):\n\
             \x20   try:\n\
             \x20       c.create_container('{CONTAINER}'); break\n\
             \x20   except Exception as e:\n\
             \x20       if type(e).__name__ == 'ResourceExistsError': break\n\
             \x20       time.sleep(0.2)\n\
             else:\n\
             \x20   raise SystemExit('no container after 60 s')\n"
        ));
        server
    }

    /// A connection string to the emulator at `endpoint` (the server's own, or a gate's).
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={}/{ACCOUNT};",
            self.endpoint
        )
    }

    /// Runs `script` with the venv's Python, `c` bound to a `BlobServiceClient` of the emulator;
    /// returns its standard output.
    pub fn python(&self, script: &str) -> String {
        let script = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             c=BlobServiceClient.from_connection_string('{}')\n{script}",
            self.connection_string()
        );
        let out = Command::new(test_bin("python")).args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "azurite script failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The environment the node needs for it (account and key; the endpoint is in the config).
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), KEY.into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
