//! Corporate networks: a TLS endpoint whose certificate comes from a company CA is
//! refused until that CA is given (`--ca-file`) or trusted by the system store
//! (`--tls-roots system`), and requests go through the proxy `HTTPS_PROXY` names.
//! The endpoint is the project's simulator behind a TLS terminator with a test CA;
//! the proxy is a CONNECT proxy on loopback that records what it was asked for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use amperity_operator::amperity::wire::RunRequest;
use amperity_operator::amperity::{
    AllowList, AmperityClient, ClientConfig, ClientError, Credentials, SecretString, Target,
    TlsConfig,
};
use amperity_operator::sim::{self, SimConfig, SimHandle};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "sim-token";

/// A test CA and a certificate for `localhost` it signed, made with openssl.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("amperity-tls-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs (tests/e2e/testenv.sh install installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Amperity test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves TLS on loopback (certificate for `localhost`) in front of `backend`.
async fn tls_front(pki: &Pki, backend: std::net::SocketAddr) -> u16 {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.dir.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.dir.join("server.key")).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// A CONNECT proxy on loopback; returns its port and what it was asked to reach.
async fn connect_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let Some(target) = line
                    .strip_prefix("CONNECT ")
                    .and_then(|l| l.split_whitespace().next())
                else {
                    return;
                };
                let target = target.to_string();
                log.lock().unwrap().push(target.clone());
                // The rest of the request head.
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                // "localhost" is this machine: connect on loopback.
                let upstream = target.replace("localhost", "127.0.0.1");
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let mut client = reader.into_inner();
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (port, asked)
}

async fn simulator() -> SimHandle {
    sim::spawn(SimConfig {
        speed: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn client(port: u16, tls: TlsConfig) -> (AmperityClient, Target) {
    let url = format!("https://localhost:{port}/api");
    let allow = AllowList::parse(&[url.as_str()]).unwrap();
    let client = AmperityClient::new(ClientConfig {
        allow: allow.clone(),
        tls,
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Target::new(Some(&url), "", "socktown", "2024-04-01", &allow).unwrap();
    (client, target)
}

#[tokio::test]
async fn a_company_ca_is_refused_until_it_is_given() {
    let pki = Pki::new();
    let sim = simulator().await;
    let port = tls_front(&pki, sim.addr()).await;
    let creds = Credentials::Token(SecretString::new(TOKEN));
    let request = RunRequest {
        config_id: "cg-tls".into(),
        ..RunRequest::default()
    };
    // The bundled roots do not know the company CA.
    let (plain, target) = client(port, TlsConfig::default());
    let e = plain
        .start(&target, &creds, &request, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect(_)), "{e}");
    // The message names the cause a person can act on.
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert_eq!(sim.stats().starts, 0, "nothing reached the API");
    // Given with --ca-file, it is trusted.
    let (trusting, target) = client(
        port,
        TlsConfig {
            ca_file: Some(pki.ca()),
            ..TlsConfig::default()
        },
    );
    let started = trusting
        .start(&target, &creds, &request, None)
        .await
        .unwrap();
    assert!(started.body.id.starts_with("wf-"));
    assert_eq!(sim.stats().starts, 1);
    // A file that is not PEM certificates is refused at start-up, naming it.
    let bogus = pki.dir.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let err = AmperityClient::new(ClientConfig {
        tls: TlsConfig {
            ca_file: Some(bogus.clone()),
            ..TlsConfig::default()
        },
        ..ClientConfig::default()
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains("bogus.pem"), "{err}");
}

fn manifest(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("run.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: amperity.dev/v1alpha1\nkind: AmperityWorkflowRun\nmetadata: {{name: tls}}\nspec:\n  \
             tenant: socktown\n  endpoint: https://localhost:{port}/api\n  tokenSecretRef: {{name: s}}\n  configId: cg-through-proxy\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    path
}

fn local(dir: &Path, port: u16, envs: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amperity-operator"));
    cmd.args(["local", "-f"])
        .arg(manifest(dir, port))
        .arg("--token-file")
        .arg(dir.join("token"))
        .args(["--output", "text"])
        .env(
            "AMPERITY_ALLOWED_ENDPOINTS",
            format!("https://localhost:{port}/api"),
        )
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("SSL_CERT_FILE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_goes_through_https_proxy_and_trusts_the_ca_it_is_given() {
    let pki = Pki::new();
    let sim = simulator().await;
    let port = tls_front(&pki, sim.addr()).await;
    let (proxy, asked) = connect_proxy().await;
    let dir = pki.dir.clone();
    let envs = vec![
        ("HTTPS_PROXY", format!("http://127.0.0.1:{proxy}")),
        ("AMPERITY_CA_FILE", pki.ca().display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || local(&dir, port, &envs))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "local failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|t| *t == format!("localhost:{port}")),
        "the proxy saw {asked:?}"
    );
    assert!(sim.stats().starts_by_config["cg-through-proxy"] == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_store_is_used_when_asked() {
    let pki = Pki::new();
    let sim = simulator().await;
    let port = tls_front(&pki, sim.addr()).await;
    let dir = pki.dir.clone();
    // The system store, pointed at the company CA the way OpenSSL-minded tools are.
    let envs = vec![
        ("AMPERITY_TLS_ROOTS", "system".to_string()),
        ("SSL_CERT_FILE", pki.ca().display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || local(&dir, port, &envs))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "local failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
