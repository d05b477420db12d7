//! The cluster's certificate authority and its node certificates (feature
//! `pki`).
//!
//! A cluster has one CA; every node holds a certificate signed by it that
//! names the node (common name and DNS subject alternative name both carry
//! the node id). Mesh peers accept each other when their certificates chain
//! to the CA, then read the peer's node id from its certificate with
//! [`cert_node_name`].
//!
//! Like the rest of the crate this reads no clock: callers pass the start of
//! the validity period (`not_before`) and its length in days.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::NodeId;

/// Re-exported so callers can build `not_before` without depending on `time`
/// themselves.
pub use time::OffsetDateTime;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cluster name is empty; give a name such as `ganger`")]
    EmptyCluster,
    #[error(
        "a validity of {days} days from {not_before} is out of range; use at least 1 day, ending before the year 10000"
    )]
    Validity {
        not_before: OffsetDateTime,
        days: u32,
    },
    #[error("cannot generate a key pair: {0}")]
    KeyGen(#[source] rcgen::Error),
    #[error("cannot sign the {what} certificate: {source}")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "the CA key is not a PEM private key rcgen can use ({0}); give the ca-key.pem written by `meshctl tls ca create`"
    )]
    CaKey(#[source] rcgen::Error),
    #[error(
        "the CA certificate cannot be used to sign ({0}); give the ca.pem written by `meshctl tls ca create`"
    )]
    CaCert(#[source] rcgen::Error),
    #[error(
        "the CA certificate is not a PEM certificate; give the ca.pem written by `meshctl tls ca create`"
    )]
    CaPem,
    #[error("the CA certificate is not a CA (its basic constraints do not allow signing)")]
    NotCa,
    #[error(
        "the CA key does not belong to the CA certificate; give the ca-key.pem written together with this ca.pem"
    )]
    CaKeyMismatch,
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    #[error(
        "the certificate names no node: it has neither a DNS subject alternative name nor a common name"
    )]
    NoName,
    /// A certificate shown as an API credential that is not a client
    /// certificate made for the API (a node's certificate, say).
    #[error(
        "the client certificate is not an API credential ({0}); make one with `meshctl tls cert create --client NAME --role ROLE`"
    )]
    NotClient(&'static str),
}

/// The URI subject alternative name that carries an API client's role:
/// `ganger:role:admin`. Node certificates carry none, so a node's
/// certificate is never taken for an API credential.
pub const ROLE_URI_PREFIX: &str = "ganger:role:";

/// A cluster's certificate authority, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    /// The CA's private key (PKCS#8). Whoever holds it can admit nodes.
    pub key_pem: String,
}

/// A node's certificate, signed by the cluster's CA, and its private key, as
/// PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a new CA for `cluster`, valid for `days` from `not_before`.
///
/// Its path length is 0: it signs node certificates, not other CAs.
pub fn create_ca(cluster: &str, not_before: OffsetDateTime, days: u32) -> Result<Ca, PkiError> {
    if cluster.is_empty() {
        return Err(PkiError::EmptyCluster);
    }
    let mut params = CertificateParams::default();
    set_validity(&mut params, not_before, days)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Ganger CA {cluster}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(PkiError::KeyGen)?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Sign { what: "CA", source })?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates a certificate for `node`, signed by `ca`, valid for `days` from
/// `not_before`, usable both to serve and to dial (server and client auth).
pub fn create_node_cert(
    ca: &Ca,
    node: &NodeId,
    not_before: OffsetDateTime,
    days: u32,
) -> Result<NodeCert, PkiError> {
    sign(ca, node_params(node, not_before, days)?, "node")
}

/// Creates a certificate for the API user `user` with `role`, signed by
/// `ca`: client authentication only, its role in a URI subject alternative
/// name ([`ROLE_URI_PREFIX`]), the user as common name.
pub fn create_client_cert(
    ca: &Ca,
    user: &crate::UserName,
    role: crate::auth::Role,
    not_before: OffsetDateTime,
    days: u32,
) -> Result<NodeCert, PkiError> {
    let mut params = CertificateParams::default();
    set_validity(&mut params, not_before, days)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, user.as_str());
    // A role's name is lowercase ASCII letters, valid IA5.
    let uri = format!("{ROLE_URI_PREFIX}{role}")
        .try_into()
        .map_err(|source| PkiError::Sign {
            what: "client",
            source,
        })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, params, "client")
}

/// The API caller a client certificate (DER, already verified against the
/// CA) stands for. Refused unless it is one [`create_client_cert`] makes:
/// client authentication only (a node's certificate also serves) and a
/// role URI.
pub fn client_caller(cert_der: &[u8]) -> Result<crate::auth::Caller, PkiError> {
    let cert = parse(cert_der)?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| PkiError::Parse(e.to_string()))?
        .ok_or(PkiError::NotClient("it has no extended key usage"))?;
    if eku.value.server_auth || !eku.value.client_auth {
        return Err(PkiError::NotClient(
            "a node's certificate, or one not made for client authentication only",
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut roles = san.into_iter().flat_map(|san| {
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
                _ => None,
            })
    });
    let role = roles
        .next()
        .ok_or(PkiError::NotClient("it carries no role"))?
        .parse()
        .map_err(|_| PkiError::NotClient("its role is not admin, submit or read"))?;
    if roles.next().is_some() {
        return Err(PkiError::NotClient("it carries more than one role"));
    }
    let user = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .and_then(|cn| crate::UserName::new(cn).ok())
        .filter(|u| !crate::auth::reserved_user(u))
        .ok_or(PkiError::NotClient(
            "its common name is not a valid user name",
        ))?;
    Ok(crate::auth::Caller { user, role })
}

/// Signs `params` with the CA, checking first that the CA's certificate
/// and key belong together and can sign.
fn sign(ca: &Ca, mut params: CertificateParams, what: &'static str) -> Result<NodeCert, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(PkiError::CaKey)?;
    let ca_der = cert_pem_to_der(&ca.cert_pem).map_err(|_| PkiError::CaPem)?;
    let ca_cert = parse(&ca_der)?;
    if !ca_cert.is_ca() {
        return Err(PkiError::NotCa);
    }
    if ca_cert.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(PkiError::CaKeyMismatch);
    }
    let issuer =
        Issuer::from_ca_cert_der(&ca_der.as_slice().into(), ca_key).map_err(PkiError::CaCert)?;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(PkiError::KeyGen)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Sign { what, source })?;
    Ok(NodeCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates a self-signed certificate for `node`, for development meshes that
/// run without a CA: peers cannot verify it, only read the name in it.
pub fn create_self_signed_node_cert(
    node: &NodeId,
    not_before: OffsetDateTime,
    days: u32,
) -> Result<NodeCert, PkiError> {
    let params = node_params(node, not_before, days)?;
    let key = KeyPair::generate().map_err(PkiError::KeyGen)?;
    let cert = params.self_signed(&key).map_err(|source| PkiError::Sign {
        what: "self-signed node",
        source,
    })?;
    Ok(NodeCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The node id a certificate (DER) names: its first DNS subject alternative
/// name, else its common name.
///
/// Parsed with x509-parser: rcgen only writes certificates (its own parsing
/// is built on x509-parser too, which the `pki` feature already pulls in for
/// signing with a CA loaded from PEM), so this adds no dependency.
pub fn cert_node_name(cert_der: &[u8]) -> Result<String, PkiError> {
    let cert = parse(cert_der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let dns = san.and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
    });
    if let Some(dns) = dns {
        return Ok(dns);
    }
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or(PkiError::NoName)
}

/// The DER of the first certificate in PEM text, e.g. to pass to
/// [`cert_node_name`].
pub fn cert_pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, pem)| pem.contents)
        .map_err(|e| PkiError::Parse(format!("not a PEM certificate: {e}")))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Parse(e.to_string()))
}

/// What every node certificate carries: the node id as common name and DNS
/// name, and both TLS uses, since a node both accepts and dials peers.
fn node_params(
    node: &NodeId,
    not_before: OffsetDateTime,
    days: u32,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    set_validity(&mut params, not_before, days)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node.as_str());
    // A NodeId is ASCII letters, digits, '-', '_' and '.', all valid IA5.
    let dns = node.as_str().try_into().map_err(|source| PkiError::Sign {
        what: "node",
        source,
    })?;
    params.subject_alt_names = vec![SanType::DnsName(dns)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn set_validity(
    params: &mut CertificateParams,
    not_before: OffsetDateTime,
    days: u32,
) -> Result<(), PkiError> {
    let out_of_range = || PkiError::Validity { not_before, days };
    if days == 0 {
        return Err(out_of_range());
    }
    let not_after = not_before
        .checked_add(time::Duration::days(i64::from(days)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(out_of_range)?;
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        // 2025-01-01T00:00:00Z
        OffsetDateTime::from_unix_timestamp(1_735_689_600).unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        cert_pem_to_der(pem).unwrap()
    }

    #[test]
    fn node_cert_names_its_node() {
        let ca = create_ca("test", t0(), 10).unwrap();
        let node = NodeId::new("node-a.1").unwrap();
        let cert = create_node_cert(&ca, &node, t0(), 5).unwrap();
        assert_eq!(cert_node_name(&der(&cert.cert_pem)).unwrap(), "node-a.1");

        let der = der(&cert.cert_pem);
        let parsed = parse(&der).unwrap();
        assert!(!parsed.is_ca());
        assert_eq!(
            parsed.issuer().to_string(),
            parse(&super::tests::der(&ca.cert_pem))
                .unwrap()
                .subject()
                .to_string()
        );
        assert_eq!(parsed.validity().not_before.timestamp(), 1_735_689_600);
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            1_735_689_600 + 5 * 86_400
        );
    }

    #[test]
    fn a_client_cert_carries_its_user_and_role_and_a_node_cert_is_no_credential() {
        use crate::auth::Role;
        let ca = create_ca("test", t0(), 10).unwrap();
        for role in Role::ALL {
            let user = crate::UserName::new("alice").unwrap();
            let cert = create_client_cert(&ca, &user, role, t0(), 5).unwrap();
            let caller = client_caller(&der(&cert.cert_pem)).unwrap();
            assert_eq!((caller.user, caller.role), (user, role));
        }
        let node = create_node_cert(&ca, &NodeId::new("n1").unwrap(), t0(), 5).unwrap();
        let e = client_caller(&der(&node.cert_pem)).unwrap_err().to_string();
        assert!(
            e.contains("node's certificate") && e.contains("--client"),
            "{e}"
        );
        let e = client_caller(&der(&ca.cert_pem)).unwrap_err();
        assert!(matches!(e, PkiError::NotClient(_)), "{e}");
        let reserved = crate::UserName::new("local").unwrap();
        let cert = create_client_cert(&ca, &reserved, Role::Admin, t0(), 5).unwrap();
        assert!(client_caller(&der(&cert.cert_pem)).is_err());
    }

    #[test]
    fn ca_is_a_ca_named_after_its_cluster() {
        let ca = create_ca("prod", t0(), 10).unwrap();
        let der = der(&ca.cert_pem);
        let cert = parse(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert_node_name(&der).unwrap(), "Ganger CA prod");
        assert!(ca.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn two_cas_differ() {
        let a = create_ca("c", t0(), 10).unwrap();
        let b = create_ca("c", t0(), 10).unwrap();
        assert_ne!(a.cert_pem, b.cert_pem);
        assert_ne!(a.key_pem, b.key_pem);
    }

    #[test]
    fn self_signed_node_cert_names_its_node() {
        let node = NodeId::new("dev").unwrap();
        let cert = create_self_signed_node_cert(&node, t0(), 1).unwrap();
        assert_eq!(cert_node_name(&der(&cert.cert_pem)).unwrap(), "dev");
    }

    #[test]
    fn refuses_bad_inputs() {
        let ca = create_ca("c", t0(), 10).unwrap();
        let other = create_ca("c", t0(), 10).unwrap();
        let node = NodeId::new("n").unwrap();
        assert!(matches!(
            create_ca("", t0(), 1),
            Err(PkiError::EmptyCluster)
        ));
        assert!(matches!(
            create_ca("c", t0(), 0),
            Err(PkiError::Validity { .. })
        ));
        assert!(matches!(
            create_node_cert(&ca, &node, t0(), 4_000_000),
            Err(PkiError::Validity { .. })
        ));
        let mixed = Ca {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        assert!(matches!(
            create_node_cert(&mixed, &node, t0(), 1),
            Err(PkiError::CaKeyMismatch)
        ));
        let leaf = create_node_cert(&ca, &node, t0(), 1).unwrap();
        let not_ca = Ca {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        };
        assert!(matches!(
            create_node_cert(&not_ca, &node, t0(), 1),
            Err(PkiError::NotCa)
        ));
        assert!(matches!(cert_node_name(b"junk"), Err(PkiError::Parse(_))));
        assert!(matches!(cert_pem_to_der("junk"), Err(PkiError::Parse(_))));
    }
}
