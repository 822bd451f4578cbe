//! TLS for `https://` gateways: rustls with the ring provider, trusting the system's root
//! certificates (the same pieces the Redis client already uses for `rediss://`).

use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::http::Io;

/// The client configuration, built once: loading the system's roots reads files.
static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();

fn config() -> Result<Arc<ClientConfig>, String> {
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted root certificates found on this system ({} errors reading them)",
                    found.errors.len()
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// TLS over `tcp`, checking that the certificate names `host`.
pub async fn wrap(tcp: TcpStream, host: &str) -> Result<Box<dyn Io>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
    let stream = TlsConnector::from(config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(stream))
}
