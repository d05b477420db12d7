use super::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn docker_config_entries_are_found_by_the_image_registry() {
    let text = format!(
        r#"{{"auths": {{
            "https://index.docker.io/v1/": {{"auth": "{}"}},
            "127.0.0.1:5000": {{"username": "ci", "password": "pw"}},
            "http://ghcr.io": {{"identitytoken": "tok"}}
        }}, "credsStore": "ignored"}}"#,
        b64("hub:secret:with:colons")
    );
    let auth = RegistryAuth::parse(&text).unwrap();
    let hub = auth.for_registry("docker.io").unwrap();
    assert_eq!(hub.username.as_deref(), Some("hub"));
    assert_eq!(hub.password.as_deref(), Some("secret:with:colons"));
    assert_eq!(
        auth.for_registry("127.0.0.1:5000")
            .unwrap()
            .password
            .as_deref(),
        Some("pw")
    );
    assert_eq!(
        auth.for_registry("ghcr.io")
            .unwrap()
            .identity_token
            .as_deref(),
        Some("tok")
    );
    assert!(auth.for_registry("quay.io").is_none());
    assert_eq!(
        auth.registries(),
        ["127.0.0.1:5000", "docker.io", "ghcr.io"]
    );
}

#[test]
fn a_bad_entry_is_named_without_its_secret() {
    for (entry, why) in [
        (r#"{"auth": "%%%"}"#, "not base64"),
        (
            format!(r#"{{"auth": "{}"}}"#, b64("nocolon")).as_str(),
            "user:password",
        ),
        (r#"{"username": "u"}"#, "no \"auth\""),
    ] {
        let text = format!(r#"{{"auths": {{"reg.example:443": {entry}}}}}"#);
        let err = RegistryAuth::parse(&text).unwrap_err();
        assert!(
            err.contains("reg.example:443") && err.contains(why),
            "{err}"
        );
        assert!(!err.contains("nocolon"), "{err}");
    }
    let err = RegistryAuth::parse(r#"{"auths": {"r": {"password": "hunter2""#).unwrap_err();
    assert!(!err.contains("hunter2") && err.contains("line"), "{err}");
}

#[test]
fn a_directory_of_files_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"auths": {"a.example": {"password": "1"}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"auths": {"b.example": {"password": "2"}}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not read").unwrap();
    let auth = RegistryAuth::load(dir.path()).unwrap();
    assert_eq!(auth.registries(), ["a.example", "b.example"]);
    let missing = RegistryAuth::load(&dir.path().join("none.json")).unwrap_err();
    assert!(missing.to_string().contains("none.json"), "{missing}");
}
