//! Tests of `config`.

use super::*;

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
        ..Default::default()
    };
    assert!(matches!(
        Config::from_args(&args),
        Err(ConfigError::ServicePorts(_))
    ));
    let args = Args {
        max_connections_per_source: Some(0),
        insecure_dev: true,
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
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.retention.max_age_ms, 90 * 60_000);
    assert_eq!(c.retention.max_records, 500);
    assert_eq!(c.max_log_bytes, 4 << 20);
    let d = Config::from_args(&Args {
        insecure_dev: true,
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
