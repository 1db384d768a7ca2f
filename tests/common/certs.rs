//! Per-run test PKI minted with rcgen; owns the PEM files, not any TLS config.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files for one test run. The files live as long as `dir`.
pub struct Certs {
    pub dir: tempfile::TempDir,
    /// CA that signed `server_cert` and `client_cert`.
    pub ca: PathBuf,
    /// Server leaf, SANs `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client leaf for mTLS, signed by `ca`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An unrelated CA: trusting only this must make handshakes fail.
    pub other_ca: PathBuf,
}

impl Certs {
    /// Mints a fresh CA, server and client leaves, and an unrelated CA.
    pub fn mint() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir()
            .expect("tempdir");
        let ca = new_ca("proxy-test CA");
        let other = new_ca("unrelated CA");

        let server = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(&["test-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let (server_key, client_key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        // Signing fresh, well-formed params with a fresh key cannot fail.
        let server_pem = server.signed_by(&server_key, &*ca).unwrap().pem();
        let client_pem = client.signed_by(&client_key, &*ca).unwrap().pem();

        let write = |name: &str, pem: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Certs {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key.serialize_pem()),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key.serialize_pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            dir,
        }
    }
}

fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // A fresh P-256 key and fixed params: nothing here can fail.
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(sans: &[&str], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    // `new` turns "127.0.0.1" into an IP SAN; the names are valid DNS names.
    let mut params = CertificateParams::new(sans).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "proxy-test leaf");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params
}
