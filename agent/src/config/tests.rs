//! Tests of `config`.

use super::*;

/// A mesh address --insecure-dev accepts.
const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7946);

#[test]
fn flags_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshd.toml");
    std::fs::write(
        &path,
        "node_id = \"from-file\"\nmax_queue = 5\napi = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let args = Args {
        config: Some(path),
        node_id: Some("from-flag".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    let c = Config::from_args(&args).unwrap();
    assert_eq!(c.node_id.as_str(), "from-flag");
    assert_eq!(c.max_queue, 5);
    assert_eq!(c.api.port(), 9000);
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
}

#[test]
fn bad_file_and_values_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "nodeid = 1\n").unwrap();
    let args = Args {
        config: Some(path),
        ..Default::default()
    };
    assert!(matches!(
        Config::from_args(&args),
        Err(ConfigError::Parse { .. })
    ));
    let args = Args {
        node_id: Some("bad id".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    assert!(matches!(
        Config::from_args(&args),
        Err(ConfigError::NodeId(_))
    ));
    let args = Args {
        max_queue: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        Config::from_args(&args),
        Err(ConfigError::MaxQueue)
    ));
    let args = Args {
        service_ports: Some("80-20".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    assert!(matches!(
        Config::from_args(&args),
        Err(ConfigError::ServicePorts(_))
    ));
    let args = Args {
        max_connections_per_source: Some(0),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    let e = Config::from_args(&args).unwrap_err().to_string();
    assert!(e.contains("--max-connections-per-source"), "{e}");
}

#[test]
fn retention_and_the_log_cap_parse_and_bad_values_say_which_flag() {
    let c = Config::from_args(&Args {
        retain_finished: Some("90m".into()),
        retain_finished_records: Some(500),
        max_log_bytes: Some("4M".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.retention.max_age_ms, 90 * 60_000);
    assert_eq!(c.retention.max_records, 500);
    assert_eq!(c.max_log_bytes, 4 << 20);
    let d = Config::from_args(&Args {
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(d.retention, Retention::default());
    assert_eq!(d.max_log_bytes, crate::logs::DEFAULT_MAX_LOG_BYTES);
    assert_eq!(parse_duration_ms("7d"), Some(7 * 86_400_000));
    assert_eq!(parse_duration_ms("3600"), Some(3_600_000));
    assert_eq!(parse_bytes("65536"), Some(65536));
    assert_eq!(parse_bytes("1g"), Some(1 << 30));
    for (args, flag) in [
        (
            Args {
                retain_finished: Some("soon".into()),
                ..Default::default()
            },
            "--retain-finished",
        ),
        (
            Args {
                retain_finished_records: Some(0),
                ..Default::default()
            },
            "--retain-finished-records",
        ),
        (
            Args {
                max_log_bytes: Some("100".into()),
                ..Default::default()
            },
            "--max-log-bytes",
        ),
    ] {
        let e = Config::from_args(&Args {
            insecure_dev: true,
            bind: Some(LOOPBACK),
            ..args
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(flag), "{e}");
    }
}

#[test]
fn service_ports_and_connection_caps_come_from_any_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshd.toml");
    std::fs::write(
        &path,
        "service_ports = \"8000-8999\"\nmax_connections = 50\n",
    )
    .unwrap();
    let args = Args {
        config: Some(path),
        max_connections_per_source: Some(5),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    let c = Config::from_args(&args).unwrap();
    assert!(c.service_ports.allows(8000) && !c.service_ports.allows(9000));
    assert_eq!(
        c.conn_limits,
        ConnLimits {
            total: 50,
            per_source: 5
        }
    );
    let d = Config::from_args(&Args {
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(d.service_ports, ServicePorts::default());
    assert_eq!(d.conn_limits, ConnLimits::default());
}

#[test]
fn fence_after_takes_seconds_within_its_range_and_refuses_the_rest() {
    let with = |secs: Option<f64>| {
        Config::from_args(&Args {
            fence_after: secs,
            insecure_dev: true,
            bind: Some(LOOPBACK),
            ..Default::default()
        })
    };
    assert_eq!(
        with(None).unwrap().mesh.fence_after,
        crate::config::DEFAULT_FENCE_AFTER
    );
    assert_eq!(
        with(Some(2.5)).unwrap().mesh.fence_after,
        std::time::Duration::from_millis(2500)
    );
    for bad in [0.0, 0.5, -3.0, 3600.5, f64::NAN, f64::INFINITY, f64::MAX] {
        let e = with(Some(bad)).unwrap_err();
        assert!(matches!(e, ConfigError::FenceAfter), "{bad}: {e:?}");
        assert!(e.to_string().contains("--fence-after"), "{e}");
    }
}

#[test]
fn an_api_open_to_other_hosts_without_credentials_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = |a: Args| Args {
        tls_ca: Some(dir.path().join("ca.pem")),
        tls_cert: Some(dir.path().join("n.pem")),
        tls_key: Some(dir.path().join("n.key")),
        ..a
    };
    let public: SocketAddr = "0.0.0.0:7700".parse().unwrap();
    let e = Config::from_args(&tls(Args {
        api: Some(public),
        ..Default::default()
    }))
    .unwrap_err();
    assert!(matches!(e, ConfigError::ApiOpen(_)), "{e:?}");
    assert!(e.to_string().contains("--api-tokens"), "{e}");
    // Loopback needs no credentials, as before.
    assert!(Config::from_args(&tls(Args::default())).is_ok());
    // A tokens file opens it.
    let tokens = dir.path().join("tokens");
    let alice = mesh_protocol::token::create(
        &mesh_protocol::UserName::new("alice").unwrap(),
        mesh_protocol::auth::Role::Admin,
    )
    .unwrap();
    std::fs::write(&tokens, format!("{}\n", alice.line)).unwrap();
    let c = Config::from_args(&tls(Args {
        api: Some(public),
        api_tokens: Some(tokens.clone()),
        ..Default::default()
    }))
    .unwrap();
    assert!(c.api_tokens.unwrap().authenticate(&alice.secret).is_some());
    // A tokens file that is missing, malformed or empty stops the start.
    for (text, says) in [
        (None, "cannot read"),
        (Some("alice admin nothex\n"), "line 1"),
        (Some("# none yet\n"), "holds no token"),
    ] {
        let path = dir.path().join("tokens-bad");
        let _ = std::fs::remove_file(&path);
        if let Some(t) = text {
            std::fs::write(&path, t).unwrap();
        }
        let e = Config::from_args(&tls(Args {
            api_tokens: Some(path),
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn insecure_dev_refuses_addresses_that_are_not_loopback_or_private() {
    let with = |api: &str, bind: &str| {
        Config::from_args(&Args {
            insecure_dev: true,
            api: Some(api.parse().unwrap()),
            bind: Some(bind.parse().unwrap()),
            ..Default::default()
        })
    };
    for (api, bind) in [
        ("127.0.0.1:7700", "127.0.0.1:7946"),
        ("10.1.2.3:7700", "192.168.1.5:7946"),
        ("172.20.0.2:7700", "[fd00::1]:7946"),
    ] {
        assert!(with(api, bind).is_ok(), "{api} {bind}");
    }
    for (api, bind, flag) in [
        ("0.0.0.0:7700", "127.0.0.1:7946", "--api 0.0.0.0:7700"),
        ("8.8.8.8:7700", "127.0.0.1:7946", "--api 8.8.8.8:7700"),
        ("127.0.0.1:7700", "0.0.0.0:7946", "--bind 0.0.0.0:7946"),
        ("127.0.0.1:7700", "[2001:db8::1]:7946", "--bind"),
    ] {
        let e = with(api, bind).unwrap_err();
        assert!(matches!(e, ConfigError::InsecurePublic { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains(flag) && e.contains("--insecure-dev"), "{e}");
    }
    // --cleanup talks only to Docker: no address matters.
    assert!(
        Config::from_args(&Args {
            insecure_dev: true,
            cleanup: true,
            ..Default::default()
        })
        .is_ok()
    );
}

#[test]
fn api_tls_counts_as_credentials_and_needs_the_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::from_args(&Args {
        api: Some("0.0.0.0:7700".parse().unwrap()),
        api_tls: true,
        tls_ca: Some(dir.path().join("ca.pem")),
        tls_cert: Some(dir.path().join("n.pem")),
        tls_key: Some(dir.path().join("n.key")),
        ..Default::default()
    })
    .unwrap();
    assert!(c.api_tls && c.api_tokens.is_none());
    let e = Config::from_args(&Args {
        api_tls: true,
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::ApiTlsWithoutFiles), "{e:?}");
}

#[test]
fn image_gc_is_off_by_default_and_comes_from_any_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshd.toml");
    std::fs::write(
        &path,
        "image_gc = \"20G\"\nimage_gc_idle = \"2h\"\nimage_gc_all = true\n",
    )
    .unwrap();
    let args = Args {
        config: Some(path),
        image_gc: Some("10GiB".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    };
    let gc = Config::from_args(&args).unwrap().image_gc.unwrap();
    assert_eq!(gc.max_bytes, 10 << 30, "the flag beats the file");
    assert_eq!(gc.min_idle, Duration::from_secs(7200));
    assert!(gc.all);
    let off = Config::from_args(&Args {
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(off.image_gc, None);
    // The companions alone, from any layer, are refused.
    let alone = Config::from_args(&Args {
        image_gc_idle: Some("1h".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    });
    assert!(matches!(alone, Err(ConfigError::ImageGcOff)), "{alone:?}");
}

#[test]
fn the_image_source_and_docker_host_parse() {
    use mesh_protocol::image::ImageSource;
    let d = Config::from_args(&Args {
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(d.image_source, ImageSource::PeersFirst);
    assert_eq!(d.docker_host, None);
    let c = Config::from_args(&Args {
        image_source: Some("registry-only".into()),
        docker_host: Some("unix:///run/other.sock".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.image_source, ImageSource::RegistryOnly);
    assert_eq!(c.docker_host.as_deref(), Some("unix:///run/other.sock"));
    let e = Config::from_args(&Args {
        image_source: Some("anywhere".into()),
        insecure_dev: true,
        bind: Some(LOOPBACK),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--image-source"), "{e}");
}
